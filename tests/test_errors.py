"""Bad input is refused early with one sentence naming what was wrong and what was expected."""

import json
import os
import re
import shutil

import numpy as np
import pytest

import uniarm_jax
from tests.tiny_models import make_tiny_llama
from uniarm_jax.errors import CheckpointError, ConfigError
from uniarm_jax.hf.safetensors import SafetensorsFile, save_safetensors


def copy_with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    cfg = json.load(open(os.path.join(dst, "config.json")))
    cfg.update(changes)
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"))
    return str(dst)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt2"}, "model_type='gpt2' is not supported"),
    ({"sliding_window": 4096}, "sliding_window=4096 is not supported for model_type='llama'; expected null"),
    ({"model_type": "mistral", "sliding_window": 0}, "sliding_window=0 is not supported .* or a positive window"),
    ({"model_type": "qwen2", "layer_types": ["full_attention", "sliding_attention"]},
     "layer_types holds 'sliding_attention', which is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "rope_type='yarn' is not supported"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}}, r"lacks field\(s\) \['factor'\]"),
    ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads=3"),
])
def test_unsupported_config_is_refused(tiny_dir, tmp_path, change, message):
    path = copy_with_config(tiny_dir, tmp_path / "m", **change)
    with pytest.raises(ConfigError, match=message) as err:
        uniarm_jax.load_pretrained(path)
    assert "config.json" in str(err.value)


@pytest.mark.parametrize("model_type, features, message", [
    ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1),
     "use_sliding_window=True is not supported"),
    ("qwen3", dict(use_sliding_window=True, sliding_window=4, max_window_layers=0),
     "use_sliding_window=True is not supported"),
    ("qwen2", dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                    "original_max_position_embeddings": 32}), "rope_type='yarn' is not supported"),
    ("qwen3", dict(hidden_act="gelu"), "hidden_act='gelu' is not supported"),
])
def test_a_qwen_feature_not_implemented_is_refused_naming_the_field(tmp_path, model_type, features, message):
    """Real Qwen configs (written by transformers' own config classes) that switch on what the model
    does not compute: refused with the field and value, before any weight is read."""
    make_tiny_llama(tmp_path, model_type=model_type, **features)
    with pytest.raises(ConfigError, match=message) as err:
        uniarm_jax.load_pretrained(str(tmp_path))
    assert "config.json" in str(err.value)


def rewrite_weights(src, dst, edit):
    """Copies a model directory, passing its tensors through `edit(dict name -> array)`."""
    shutil.copytree(src, dst)
    f = SafetensorsFile(os.path.join(src, "model.safetensors"))
    tensors = edit({n: f.read(n) for n in f.keys()})
    save_safetensors(os.path.join(dst, "model.safetensors"),
                     [(n, a.shape, a.dtype, lambda a=a: a) for n, a in tensors.items()])
    return str(dst)


def without(name):
    return lambda t: {n: a for n, a in t.items() if n != name}


def with_tensor(name, array):
    return lambda t: {**t, name: array}


@pytest.mark.parametrize("edit, message", [
    (without("model.layers.1.mlp.up_proj.weight"),
     r"'model.layers.1.mlp.up_proj.weight' is missing \(expected shape \(80, 48\)\)"),
    (with_tensor("model.layers.0.self_attn.q_proj.bias", np.zeros(64, np.float32)),
     r"unexpected tensor 'model.layers.0.self_attn.q_proj.bias' with shape \(64,\)"),
    (with_tensor("model.layers.0.self_attn.k_proj.weight", np.zeros((48, 48), np.float32)),
     r"'model.layers.0.self_attn.k_proj.weight' has shape \(48, 48\); the config expects \(32, 48\)"),
], ids=["missing", "unexpected", "misshaped"])
def test_a_wrong_tensor_is_named_with_its_shapes(tiny_dir, tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message):
        uniarm_jax.load_pretrained(rewrite_weights(tiny_dir, tmp_path / "m", edit))


def test_missing_files_get_one_sentence(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory .* does not exist"):
        uniarm_jax.load_pretrained(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        uniarm_jax.load_pretrained(str(tmp_path / "empty"))
    shutil.copy(os.path.join(tiny_dir, "config.json"), tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="holds no weights; expected model.safetensors"):
        uniarm_jax.load_pretrained(str(tmp_path / "empty"))


def test_corrupt_safetensors_is_refused(tiny_dir, tmp_path):
    shutil.copytree(tiny_dir, tmp_path / "m")
    with open(tmp_path / "m/model.safetensors", "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="is not a safetensors file"):
        uniarm_jax.load_pretrained(str(tmp_path / "m"))


def test_code_in_a_checkpoint_directory_never_runs(tiny_dir, tmp_path, monkeypatch):
    """auto_map points at a module that would leave a marker if imported: neither the model nor the
    tokenizer loader runs it (trust_remote_code stays off)."""
    path = copy_with_config(tiny_dir, tmp_path / "m", auto_map={"AutoModelForCausalLM": "evil.Model",
                                                                "AutoConfig": "evil.Config"})
    marker = tmp_path / "ran"
    with open(os.path.join(path, "evil.py"), "w") as f:
        f.write(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    uniarm_jax.load_pretrained(path)
    try:
        uniarm_jax.load_tokenizer(path)
    except Exception:
        pass  # the tiny model has no tokenizer files; what matters is that evil.py never ran
    assert not marker.exists()


def test_logits_refuse_bad_token_ids(tiny_dir):
    handle = uniarm_jax.load_pretrained(tiny_dir)
    with pytest.raises(ValueError, match=r"token ids in \[0, 96\]; the vocabulary has 96 tokens"):
        uniarm_jax.logits(handle, np.array([[0, 96]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\); input_ids have \(1, 2\)"):
        uniarm_jax.logits(handle, np.array([[0, 5]]), np.ones((1, 3)))
    with pytest.raises(ConfigError, match="dtype='float8' is not one of"):
        uniarm_jax.load_pretrained("anything", dtype="float8")


def test_truncated_safetensors_is_refused_naming_the_file_and_tensor(tiny_dir, tmp_path):
    shutil.copytree(tiny_dir, tmp_path / "m")
    path = tmp_path / "m/model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} is truncated: tensor '[\w.]+' ends at byte \d+ "
                                              r"of the data, but the file holds only \d+ bytes of data"):
        uniarm_jax.load_pretrained(str(tmp_path / "m"))
    path.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(CheckpointError, match=r"is truncated or not a safetensors file: its header says \d+ bytes"):
        uniarm_jax.load_pretrained(str(tmp_path / "m"))


def test_a_header_that_lies_about_a_tensor_size_is_refused(tmp_path):
    path = str(tmp_path / "t.safetensors")
    save_safetensors(path, [("w", (2, 3), np.float32, lambda: np.zeros((2, 3), np.float32))])
    raw = open(path, "rb").read()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    header["w"]["shape"] = [3, 3]
    blob = json.dumps(header, separators=(",", ":")).encode().ljust(size)  # same length: [2,3] -> [3,3]
    open(path, "wb").write(raw[:8] + blob + raw[8 + size:])
    with pytest.raises(CheckpointError, match=r"tensor 'w' of shape \[3, 3\] \(F32\) needs 36 bytes; its data_offsets "
                                              "span 24"):
        SafetensorsFile(path)
