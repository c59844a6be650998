"""Logits of our Flax Llama against transformers' PyTorch classes (the oracle), float32: Llama variants,
and one model of each Llama-family architecture (Mistral, Qwen2, Qwen3) in its own transformers class."""

import json

import numpy as np
import pytest
import torch
import transformers

import uniarm_jax
from tests.tiny_models import FAMILIES, make_tiny_llama
from uniarm_jax.model import llama

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}

VARIANTS = {
    "mha-untied-rope-none": dict(num_key_value_heads=4),
    "gqa2-tied-rope-linear": dict(num_key_value_heads=2, tie_word_embeddings=True,
                                  rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "mqa-untied-rope-llama3": dict(num_key_value_heads=1, rope_scaling=LLAMA3_ROPE, rope_theta=500000.0),
    "head-dim-not-hidden-over-heads": dict(num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6),
    "attention-and-mlp-bias": dict(attention_bias=True, mlp_bias=True),
}


def torch_logits(model, ids, mask=None, positions=None):
    with torch.no_grad():
        kwargs = {}
        if mask is not None:
            kwargs["attention_mask"] = torch.tensor(mask)
        if positions is not None:
            kwargs["position_ids"] = torch.tensor(positions)
        return model(torch.tensor(ids), **kwargs).logits.float().numpy()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_transformers(tmp_path, name):
    oracle = make_tiny_llama(tmp_path, **VARIANTS[name])
    handle = uniarm_jax.load_pretrained(str(tmp_path))
    ids = np.random.RandomState(1).randint(0, oracle.config.vocab_size, (2, 24))
    diff = np.abs(uniarm_jax.logits(handle, ids) - torch_logits(oracle, ids)).max()
    assert diff <= 1e-4, f"{name}: max abs logit difference {diff}"


@pytest.mark.parametrize("block", [None, 5], ids=["one-block", "query-blocks-of-5"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_left_padded_batch_matches_transformers_with_positions(tmp_path, family, block, monkeypatch):
    """A left-padded batch: positions count real tokens only (as HF generate does). Every family's
    distinguishing weights are random (biases, q/k norms) and Mistral's window (6) is shorter than the
    rows, so a missing one shows. With query blocks of 5 the 16-token rows run as 4 blocks (the last one
    short), each over the keys up to its last query only."""
    if block is not None:
        monkeypatch.setattr(llama, "ATTENTION_BLOCK", block)
    oracle = make_tiny_llama(tmp_path, **FAMILIES[family])
    handle = uniarm_jax.load_pretrained(str(tmp_path))
    assert handle.config.model_type == oracle.config.model_type
    ids = np.random.RandomState(2).randint(3, 96, (3, 16))
    mask = np.ones_like(ids)
    mask[0, :5] = 0
    mask[2, :11] = 0
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    ours = uniarm_jax.logits(handle, ids, mask)
    ref = torch_logits(oracle, ids, mask, positions)
    real = mask.astype(bool)
    assert np.abs(ours[real] - ref[real]).max() <= 1e-4


def test_a_sliding_window_is_honoured_and_one_at_least_the_length_is_irrelevant(tmp_path):
    """Mistral's window changes the logits of a sequence longer than it (and matches transformers
    there, above); a window at least the sequence length computes exactly full attention."""
    make_tiny_llama(tmp_path, model_type="mistral", sliding_window=6)
    handle = uniarm_jax.load_pretrained(str(tmp_path))
    ids = np.random.RandomState(4).randint(3, 96, (2, 16))
    full = uniarm_jax.logits(handle.__class__(handle.config.replace(sliding_window=None), handle.params), ids)
    long = handle.__class__(handle.config.replace(sliding_window=16), handle.params)
    np.testing.assert_array_equal(uniarm_jax.logits(long, ids), full)
    windowed = uniarm_jax.logits(handle, ids)
    np.testing.assert_allclose(windowed[:, :6], full[:, :6], atol=1e-5)  # no key is 6 back yet
    assert np.abs(windowed[:, 6:] - full[:, 6:]).max() > 1e-2


def test_qwen_config_as_released_with_an_unused_window_is_full_attention(tmp_path):
    """Qwen2.5's released config.json keeps a `sliding_window` (131072) beside `use_sliding_window: false`
    (the window then applies nowhere); transformers reads it as full attention, and so do we (here a
    window of 4 in 16-token rows, which would show)."""
    make_tiny_llama(tmp_path, model_type="qwen2")
    config = json.load(open(tmp_path / "config.json"))
    config.update(sliding_window=4, use_sliding_window=False, max_window_layers=1)
    json.dump(config, open(tmp_path / "config.json", "w"))
    oracle = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    handle = uniarm_jax.load_pretrained(str(tmp_path))
    assert handle.config.sliding_window is None
    ids = np.random.RandomState(5).randint(3, 96, (2, 16))
    assert np.abs(uniarm_jax.logits(handle, ids) - torch_logits(oracle, ids)).max() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoint_loads_exactly(tmp_path, dtype):
    """bf16 / fp16 safetensors are read bit-exactly (then upcast) and give the oracle's logits."""
    oracle = make_tiny_llama(tmp_path, dtype=dtype)  # the oracle holds the rounded weights, in fp32
    handle = uniarm_jax.load_pretrained(str(tmp_path), dtype="float32")
    q = np.asarray(handle.params["layers"]["self_attn"]["q_proj"]["kernel"][1])
    np.testing.assert_array_equal(q, oracle.model.layers[1].self_attn.q_proj.weight.detach().numpy().T)
    ids = np.random.RandomState(3).randint(0, 96, (2, 12))
    assert np.abs(uniarm_jax.logits(handle, ids) - torch_logits(oracle, ids)).max() <= 1e-4

    native = uniarm_jax.load_pretrained(str(tmp_path), dtype={torch.bfloat16: "bfloat16",
                                                              torch.float16: "float16"}[dtype])
    assert native.params["embed_tokens"]["embedding"].dtype == str(dtype).split(".")[1]
    assert np.isfinite(uniarm_jax.logits(native, ids)).all()
