"""Hugging Face directories in and out: export -> transformers load -> same logits; round trip
exact; sharded indexes; torch `.bin` only through the weights-only loader."""

import json
import os
import pickle

import jax
import numpy as np
import pytest
import torch
import transformers

import uniarm_jax
from tests.tiny_models import FAMILIES, make_tiny_llama
from uniarm_jax.errors import CheckpointError
from uniarm_jax.hf.safetensors import SafetensorsFile


def _leaves(handle):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(handle.params)[0]}


@pytest.mark.parametrize("name", ["llama-tied", *FAMILIES])
def test_export_loads_in_transformers_with_same_logits(tmp_path, name):
    """Every family comes back as its own transformers class (AutoModelForCausalLM reads the written
    config.json) with the same logits, and every tensor (biases, q/k norms included) bit for bit."""
    family = FAMILIES.get(name, dict(tie_word_embeddings=True))
    oracle = make_tiny_llama(tmp_path / "src", rope_scaling={"rope_type": "linear", "factor": 2.0}, **family)
    handle = uniarm_jax.load_pretrained(str(tmp_path / "src"))
    uniarm_jax.save_pretrained(handle, str(tmp_path / "out"))

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float32).eval()
    assert type(reloaded) is type(oracle)
    assert reloaded.config.tie_word_embeddings == oracle.config.tie_word_embeddings
    assert getattr(reloaded.config, "sliding_window", None) == getattr(oracle.config, "sliding_window", None)
    ids = np.random.RandomState(0).randint(0, 96, (2, 20))
    with torch.no_grad():
        ref = reloaded(torch.tensor(ids)).logits.numpy()
    assert np.abs(uniarm_jax.logits(handle, ids) - ref).max() <= 1e-4

    # Round trip exact: every tensor of the original file comes back bit for bit.
    src, out = SafetensorsFile(str(tmp_path / "src/model.safetensors")), SafetensorsFile(
        str(tmp_path / "out/model.safetensors"))
    assert set(out.keys()) == set(src.keys())
    for name in src.keys():
        np.testing.assert_array_equal(out.read(name), src.read(name), err_msg=name)


def test_sharded_export_and_bf16_round_trip(tmp_path):
    make_tiny_llama(tmp_path / "src", dtype=torch.bfloat16)
    handle = uniarm_jax.load_pretrained(str(tmp_path / "src"), dtype="bfloat16")
    from uniarm_jax.hf.checkpoints import export_hf

    export_hf(handle.params, handle.config, str(tmp_path / "out"), max_shard_bytes=20_000)
    index = json.load(open(tmp_path / "out/model.safetensors.index.json"))
    assert len(set(index["weight_map"].values())) > 2
    again = uniarm_jax.load_pretrained(str(tmp_path / "out"), dtype="bfloat16")
    a, b = _leaves(handle), _leaves(again)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def test_pytorch_bin_loads_through_weights_only(tmp_path):
    oracle = make_tiny_llama(tmp_path)
    torch.save(oracle.state_dict(), tmp_path / "pytorch_model.bin")
    os.remove(tmp_path / "model.safetensors")
    handle = uniarm_jax.load_pretrained(str(tmp_path))
    ids = np.random.RandomState(0).randint(0, 96, (1, 10))
    with torch.no_grad():
        ref = oracle(torch.tensor(ids)).logits.numpy()
    assert np.abs(uniarm_jax.logits(handle, ids) - ref).max() <= 1e-4


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    make_tiny_llama(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _Exploit()}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        uniarm_jax.load_pretrained(str(tmp_path))
    assert not (tmp_path / "pwned").exists()
