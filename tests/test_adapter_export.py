"""ARMs into the PyTorch ecosystem: PEFT LoRA directories that `peft` loads onto transformers' Llama,
merged Hugging Face directories, and our own adapter checkpoint; each gives the same logits."""

import subprocess
import sys

import numpy as np
import peft
import pytest
import torch
import transformers

import uniarm_jax
from tests.test_adapters import CONFIGS, randomise
from tests.tiny_models import make_tiny_llama
from uniarm_jax.errors import CheckpointError
from uniarm_jax.hf.adapter_files import load_adapter, save_adapter
from uniarm_jax.hf.peft import export_merged, export_peft
from uniarm_jax.model.arm import init_adapter

ALPHA = [0.7, 0.3]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("export_base")
    make_tiny_llama(path)
    return str(path)


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("name", ["lora", "pblora", "moslora", "moslora-k3-all-targets"])
def test_peft_export_gives_the_same_logits(base_dir, tmp_path, name):
    arm = randomise(init_adapter(uniarm_jax.load_pretrained(base_dir), CONFIGS[name]))
    acfg = arm.adapter_config
    alpha = None if not acfg.takes_pref else (ALPHA if acfg.num_objectives == 2 else [0.2, 0.5, 0.3])
    export_peft(arm, str(tmp_path / "peft"), alpha)

    base = transformers.LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
    ids = np.random.RandomState(0).randint(0, 96, (2, 12))
    diff = np.abs(uniarm_jax.logits(arm, ids, pref=alpha) - torch_logits(model, ids)).max()
    assert diff <= 1e-4, f"{name}: max abs difference {diff}"


@pytest.mark.parametrize("name", ["pblora", "moslora"])
def test_merged_export_gives_the_same_logits(base_dir, tmp_path, name):
    arm = randomise(init_adapter(uniarm_jax.load_pretrained(base_dir), CONFIGS[name]))
    export_merged(arm, str(tmp_path / "merged"), ALPHA)
    model = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    assert model.config.attention_bias == (name == "moslora")  # MoSLoRA's shift is an exact bias
    ids = np.random.RandomState(1).randint(0, 96, (2, 12))
    assert np.abs(uniarm_jax.logits(arm, ids, pref=ALPHA) - torch_logits(model, ids)).max() <= 1e-4


def test_adapter_checkpoint_round_trip_and_cli_export(base_dir, tmp_path):
    arm = randomise(init_adapter(uniarm_jax.load_pretrained(base_dir), CONFIGS["moslora"]))
    save_adapter(arm, str(tmp_path / "arm"))
    again = load_adapter(uniarm_jax.load_pretrained(base_dir), str(tmp_path / "arm"))
    assert again.adapter_config == arm.adapter_config
    ids = np.random.RandomState(2).randint(0, 96, (1, 8))
    np.testing.assert_array_equal(uniarm_jax.logits(again, ids, pref=ALPHA), uniarm_jax.logits(arm, ids, pref=ALPHA))

    out = subprocess.run([sys.executable, "-m", "uniarm_jax.commands.main", "export", "--base", base_dir, "--adapter",
                          str(tmp_path / "arm"), "--out", str(tmp_path / "peft"), "--pref", "0.7,0.3"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    model = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(base_dir),
                                           str(tmp_path / "peft")).eval()
    assert np.abs(uniarm_jax.logits(arm, ids, pref=ALPHA) - torch_logits(model, ids)).max() <= 1e-4

    bad = subprocess.run([sys.executable, "-m", "uniarm_jax.commands.main", "export", "--base", base_dir, "--adapter",
                          str(tmp_path / "arm"), "--out", str(tmp_path / "x"), "--pref", "0.7,0.2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert "preference vector [0.7, 0.2] sums to 0.9; expected 1" in bad.stderr


def test_adapter_for_another_base_is_refused(base_dir, tmp_path):
    arm = init_adapter(uniarm_jax.load_pretrained(base_dir), CONFIGS["lora"])
    save_adapter(arm, str(tmp_path / "arm"))
    make_tiny_llama(tmp_path / "other", num_hidden_layers=3)
    with pytest.raises(CheckpointError, match=r"not on this base: '.*other' has num_hidden_layers=3, not 2"):
        load_adapter(uniarm_jax.load_pretrained(str(tmp_path / "other")), str(tmp_path / "arm"))
    with pytest.raises(FileNotFoundError, match="has no adapter_config.json"):
        load_adapter(arm, base_dir)
