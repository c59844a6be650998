"""Adapters that travel: format 2 records its base by fingerprint, so it loads onto the same model at any
path (and onto its bfloat16 copy), is refused onto another model naming both, and `--arm-base DIR`
points a weak ARM at its moved base; format-1 directories, as the old code wrote them, still load."""

import json
import os
import re
import shutil

import numpy as np
import pytest

import uniarm_jax
from tests.cli_runner import run_uniarm
from tests.synthetic import vocabulary
from tests.test_adapters import randomise
from tests.tiny_models import make_tiny_llama, make_tiny_word_llama
from uniarm_jax.decode.guides import load_guides
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.errors import CheckpointError
from uniarm_jax.hf.adapter_files import load_adapter, read_adapter, save_adapter
from uniarm_jax.hf.fingerprint import SHAPE_FIELDS, fingerprint
from uniarm_jax.hf.safetensors import SafetensorsFile, save_safetensors
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter

PREF = [0.3, 0.7]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A base and a MoSLoRA adapter saved on it; the base then moved away from where it was trained."""
    root = tmp_path_factory.mktemp("travel")
    make_tiny_llama(root / "base")
    arm = randomise(init_adapter(uniarm_jax.load_pretrained(str(root / "base")), AdapterConfig(kind="moslora")))
    save_adapter(arm, str(root / "arm"), ["a", "b"])
    shutil.move(root / "base", root / "moved")
    return root, arm


def test_format_2_records_a_fingerprint_and_the_path_only_as_a_hint(trained):
    root, arm = trained
    meta = json.load(open(root / "arm" / "adapter_config.json"))
    assert meta["format"] == "uniarm_jax.adapter/2" and meta["base_name"] == "base"
    assert meta["base_path_hint"] == str(root / "base")
    assert meta["base"] == {"model_type": "llama", **{f: getattr(arm.config, f) for f in SHAPE_FIELDS},
                            "weights": fingerprint(str(root / "moved"))["weights"]}
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", meta["base"]["weights"])


def test_a_base_under_home_is_recorded_as_a_path_from_home(tmp_path, monkeypatch):
    """A committed adapter trained on the project's cache names no one's machine: the hint under $HOME
    is written `~/…` and read back under this machine's $HOME (where find_base then looks)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    make_tiny_llama(tmp_path / "home" / "cache" / "base")
    arm = init_adapter(uniarm_jax.load_pretrained(str(tmp_path / "home" / "cache" / "base")), AdapterConfig())
    save_adapter(arm, str(tmp_path / "arm"))
    assert json.load(open(tmp_path / "arm" / "adapter_config.json"))["base_path_hint"] == "~/cache/base"
    assert read_adapter(str(tmp_path / "arm")).base_hint == str(tmp_path / "home" / "cache" / "base")
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    assert read_adapter(str(tmp_path / "arm")).base_hint == str(tmp_path / "elsewhere" / "cache" / "base")


def test_an_adapter_loads_onto_its_base_at_any_path_and_in_any_dtype(trained, tmp_path):
    root, arm = trained
    ids = np.random.RandomState(0).randint(0, 96, (2, 9))
    expected = uniarm_jax.logits(arm, ids, pref=PREF)
    moved = load_adapter(uniarm_jax.load_pretrained(str(root / "moved")), str(root / "arm"))
    np.testing.assert_array_equal(uniarm_jax.logits(moved, ids, pref=PREF), expected)
    # the same model as bfloat16 files, and loaded as bfloat16: one fingerprint
    uniarm_jax.save_pretrained(uniarm_jax.load_pretrained(str(root / "moved")), str(tmp_path / "bf16"),
                               dtype="bfloat16")
    for hf_dir, dtype in ((tmp_path / "bf16", "float32"), (root / "moved", "bfloat16")):
        again = load_adapter(uniarm_jax.load_pretrained(str(hf_dir), dtype=dtype), str(root / "arm"))
        assert again.adapter_config == arm.adapter_config


def test_an_adapter_onto_another_model_is_refused_naming_both(trained, tmp_path):
    root, _ = trained
    make_tiny_llama(tmp_path / "reseeded", seed=1)
    make_tiny_llama(tmp_path / "deeper", num_hidden_layers=3)
    shutil.copytree(root / "moved", tmp_path / "tweaked")  # one weight of the first layer changed
    weights = SafetensorsFile(str(tmp_path / "tweaked" / "model.safetensors"))
    tensors = {name: weights.read(name) for name in weights.keys()}
    tensors["model.layers.0.post_attention_layernorm.weight"][3] += 0.05
    save_safetensors(str(tmp_path / "tweaked" / "model.safetensors"),
                     [(n, a.shape, a.dtype, lambda a=a: a) for n, a in tensors.items()])
    for name, problem in (("reseeded", "has the same shapes but other weights (fingerprints differ)"),
                          ("tweaked", "has the same shapes but other weights (fingerprints differ)"),
                          ("deeper", "has num_hidden_layers=3, not 2")):
        with pytest.raises(CheckpointError, match=re.escape(
                f"adapter '{root / 'arm'}' was trained on 'base', not on this base: '{tmp_path / name}' {problem}")):
            load_adapter(uniarm_jax.load_pretrained(str(tmp_path / name)), str(root / "arm"))


def test_format_1_as_the_old_code_wrote_it_still_loads(trained, tmp_path):
    root, arm = trained
    shutil.copytree(root / "moved", tmp_path / "base")
    old = tmp_path / "old_arm"
    old.mkdir()
    shutil.copy(root / "arm" / "adapter.safetensors", old)
    json.dump({"format": "uniarm_jax.adapter/1", "adapter": arm.adapter_config.to_dict(),
               "base": {"hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 96},
               "base_path": str(tmp_path / "base"), "objectives": ["a", "b"]}, open(old / "adapter_config.json", "w"))
    record = read_adapter(str(old))
    assert (record.format, record.base_hint, record.objectives) == ("uniarm_jax.adapter/1", str(tmp_path / "base"),
                                                                    ["a", "b"])
    base = uniarm_jax.load_pretrained(str(tmp_path / "base"))
    ids = np.random.RandomState(1).randint(0, 96, (1, 7))
    np.testing.assert_array_equal(uniarm_jax.logits(load_adapter(base, str(old)), ids, pref=PREF),
                                  uniarm_jax.logits(arm, ids, pref=PREF))
    # (a tiny model without a tokenizer: an ARM on the decoding base needs none)
    (guide,), _ = load_guides([str(old)], None, base, None, "float32")
    assert guide.params is base.params  # on its recorded path, which is the decoding base: shared

    shutil.move(tmp_path / "base", tmp_path / "elsewhere")  # format 1 knows its base by path only
    moved = uniarm_jax.load_pretrained(str(tmp_path / "elsewhere"))
    with pytest.raises(CheckpointError, match=re.escape(f"'{tmp_path / 'base'}' does not exist; pass --arm-base DIR")):
        load_guides([str(old)], None, moved, None, "float32")
    (guide,), _ = load_guides([str(old)], None, moved, None, "float32", arm_base=str(tmp_path / "elsewhere"))
    assert guide.params is moved.params
    make_tiny_llama(tmp_path / "deeper", num_hidden_layers=3)
    with pytest.raises(CheckpointError, match=re.escape(f"'{tmp_path / 'deeper'}' has num_hidden_layers=3, not 2")):
        load_guides([str(old)], None, moved, None, "float32", arm_base=str(tmp_path / "deeper"))


def test_arm_base_points_a_weak_arm_at_its_moved_base(tmp_path):
    make_tiny_word_llama(tmp_path / "base", vocabulary(), num_hidden_layers=3)
    res = run_uniarm("truncate", "--base", tmp_path / "base", "--first", 1, "--last", 1, "--out", tmp_path / "weak")
    assert res.returncode == 0, res.stderr
    weak = randomise(init_adapter(uniarm_jax.load_pretrained(str(tmp_path / "weak")), AdapterConfig(kind="moslora")))
    save_adapter(weak, str(tmp_path / "arm"))
    os.rename(tmp_path / "weak", tmp_path / "weak_moved")
    with open(tmp_path / "prompts.jsonl", "w") as f:
        f.write(json.dumps({"prompt": "Name some fruit."}) + "\n")
    common = ["sample", "--no-progress", "--base", tmp_path / "base", "--arm", tmp_path / "arm", "--pref", "0.3,0.7",
              "--prompts", tmp_path / "prompts.jsonl", "--out", tmp_path / "o.jsonl", "--template", "raw",
              "--max-new-tokens", 5]

    res = run_uniarm(*common)
    assert res.returncode == 2
    assert (f"ARM '{tmp_path / 'arm'}' was trained on 'weak', which is not here: '{tmp_path / 'base'}' has "
            f"num_hidden_layers=3, not 2; '{tmp_path / 'weak'}' does not exist; pass --arm-base DIR with that model"
            ) in res.stderr
    res = run_uniarm(*common, "--arm-base", tmp_path / "base")  # the strong base is not the weak ARM's
    assert res.returncode == 2 and "has num_hidden_layers=3, not 2" in res.stderr
    res = run_uniarm(*common, "--arm-base", tmp_path / "nowhere")
    assert res.returncode == 2 and f"--arm-base '{tmp_path / 'nowhere'}' does not exist" in res.stderr

    res = run_uniarm(*common, "--arm-base", tmp_path / "weak_moved")
    assert res.returncode == 0, res.stderr
    row = json.loads(open(tmp_path / "o.jsonl").readline())
    base = uniarm_jax.load_pretrained(str(tmp_path / "base"))
    arm = load_adapter(uniarm_jax.load_pretrained(str(tmp_path / "weak_moved")), str(tmp_path / "arm"))
    tokenizer = uniarm_jax.load_tokenizer(str(tmp_path / "base"))
    expected, _ = guided_generate(base, [arm], [row["prompt_token_ids"]], 5, pref=PREF, pad_id=tokenizer.pad_token_id)
    assert row["token_ids"] == expected[0]
