"""ARMs into the PyTorch ecosystem: PEFT LoRA directories that `peft` loads onto transformers' class of
each Llama-family base, merged Hugging Face directories, and our own adapter checkpoint; each gives the
same logits."""

import subprocess
import sys

import numpy as np
import peft
import pytest
import torch
import transformers

import uniarm_jax
from tests.test_adapters import CONFIGS, randomise
from tests.tiny_models import FAMILIES, make_tiny_llama
from uniarm_jax.errors import CheckpointError, ConfigError
from uniarm_jax.hf.adapter_files import load_adapter, save_adapter
from uniarm_jax.hf.peft import export_merged, export_peft
from uniarm_jax.model.arm import init_adapter
from uniarm_jax.model.families import family_of

ALPHA = [0.7, 0.3]


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory):
    """family -> the directory of a tiny random model of it (tests/tiny_models.py), made on first use."""
    made = {}

    def get(family):
        if family not in made:
            made[family] = str(tmp_path_factory.mktemp(f"export_{family}"))
            make_tiny_llama(made[family], **FAMILIES[family])
        return made[family]
    return get


@pytest.fixture(scope="module")
def base_dir(base_dirs):
    return base_dirs("llama")


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name", ["lora", "pblora", "moslora", "moslora-k3-all-targets"])
def test_peft_export_gives_the_same_logits(base_dirs, tmp_path, name, family):
    base_dir = base_dirs(family)
    arm = randomise(init_adapter(uniarm_jax.load_pretrained(base_dir), CONFIGS[name]))
    acfg = arm.adapter_config
    alpha = None if not acfg.takes_pref else (ALPHA if acfg.num_objectives == 2 else [0.2, 0.5, 0.3])
    export_peft(arm, str(tmp_path / "peft"), alpha)

    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
    ids = np.random.RandomState(0).randint(0, 96, (2, 12))
    diff = np.abs(uniarm_jax.logits(arm, ids, pref=alpha) - torch_logits(model, ids)).max()
    assert diff <= 1e-4, f"{family} {name}: max abs difference {diff}"


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name", ["pblora", "moslora"])
def test_merged_export_gives_the_same_logits(base_dirs, tmp_path, name, family):
    """transformers' class of the family and this project's loader both read the merged directory. A
    MoSLoRA shift (on q/k/v) is a bias: Llama's attention_bias (zeros on o_proj), added to Qwen2's own
    q/k/v biases; MistralForCausalLM has none, so the merged export is refused there."""
    arm = randomise(init_adapter(uniarm_jax.load_pretrained(base_dirs(family)), CONFIGS[name]))
    if name == "moslora" and arm.config.model_type == "mistral":
        with pytest.raises(ConfigError, match="MistralForCausalLM has no bias on q_proj; .*export the ARM as PEFT"):
            export_merged(arm, str(tmp_path / "merged"), ALPHA)
        return
    export_merged(arm, str(tmp_path / "merged"), ALPHA)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    assert type(model).__name__ == family_of(arm.config.model_type).architecture
    if arm.config.model_type == "llama":
        assert model.config.attention_bias == (name == "moslora")  # MoSLoRA's shift is an exact bias
    ids = np.random.RandomState(1).randint(0, 96, (2, 12))
    expected = uniarm_jax.logits(arm, ids, pref=ALPHA)
    assert np.abs(expected - torch_logits(model, ids)).max() <= 1e-4
    assert np.abs(expected - uniarm_jax.logits(uniarm_jax.load_pretrained(str(tmp_path / "merged")), ids)).max() <= 1e-4


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


def test_a_merged_lora_on_every_projection_is_a_whole_model_directory(tmp_path):
    """As the study's healed weak base is made: a LoRA on all seven projections merged. The directory
    carries the base's tokenizer (so `uniarm train` and transformers can use it as a model), and its
    logits are the adapted model's, in transformers and in this project's loader."""
    from tests.synthetic import vocabulary
    from tests.tiny_models import make_tiny_word_llama
    from uniarm_jax.model.adapters import AdapterConfig
    from uniarm_jax.model.projections import NAMES

    make_tiny_word_llama(tmp_path / "base", vocabulary())
    arm = randomise(init_adapter(uniarm_jax.load_pretrained(str(tmp_path / "base")),
                                 AdapterConfig(kind="lora", rank=4, targets=NAMES)))
    export_merged(arm, str(tmp_path / "merged"))
    tokenizer = uniarm_jax.load_tokenizer(str(tmp_path / "merged"))
    assert tokenizer.get_vocab() == uniarm_jax.load_tokenizer(str(tmp_path / "base")).get_vocab()
    ids = np.random.RandomState(2).randint(0, len(tokenizer), (2, 10))
    expected = uniarm_jax.logits(arm, ids)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    assert np.abs(expected - torch_logits(model, ids)).max() <= 1e-4
    assert np.abs(expected - uniarm_jax.logits(uniarm_jax.load_pretrained(str(tmp_path / "merged")), ids)).max() <= 1e-4
