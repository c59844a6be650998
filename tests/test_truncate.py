"""`uniarm truncate` / `truncate_layers`: the kept layers against transformers' own model with the
dropped layers removed in torch (the oracle), the tokenizer copied, and the refusals."""

import os

import numpy as np
import pytest
import torch
import transformers

import uniarm_jax
from tests.cli_runner import run_uniarm as uniarm
from tests.synthetic import vocabulary
from tests.tiny_models import make_tiny_llama, make_tiny_word_llama
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.handle import truncate_layers

LAYERS = 4


def keep_layers(model: transformers.LlamaForCausalLM, keep: list[int]) -> transformers.LlamaForCausalLM:
    """The oracle: transformers' model itself, with only the decoder layers `keep` left, in order."""
    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    model.config.num_hidden_layers = len(keep)
    for new_idx, layer in enumerate(model.model.layers):  # the cache is indexed by position in the stack
        layer.self_attn.layer_idx = new_idx
    return model


def torch_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids), use_cache=False).logits.float().numpy()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("deep")
    oracle = make_tiny_llama(path, num_hidden_layers=LAYERS)
    assert len(oracle.model.layers) == LAYERS
    return str(path), oracle


def test_truncate_cli_matches_transformers_with_the_middle_layer_removed(base, tmp_path):
    path, oracle = base
    out = tmp_path / "small"
    res = uniarm("truncate", "--base", path, "--first", 1, "--last", 2, "--out", out)
    assert res.returncode == 0, res.stderr
    assert f"the first 1 and last 2 of {LAYERS} layers" in res.stdout

    small = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert small.config.num_hidden_layers == 3 and len(small.model.layers) == 3
    # the weights are the original layers 0, 2, 3 bit for bit, and the rest is untouched
    reference = keep_layers(make_tiny_llama(tmp_path / "again", num_hidden_layers=LAYERS), [0, 2, 3])
    want, got = reference.state_dict(), small.state_dict()
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    for i, j in enumerate([0, 2, 3]):  # and they really are the original model's (not re-drawn)
        assert torch.equal(got[f"model.layers.{i}.mlp.down_proj.weight"],
                           oracle.state_dict()[f"model.layers.{j}.mlp.down_proj.weight"])

    ids = np.random.RandomState(7).randint(0, oracle.config.vocab_size, (2, 20))
    expected = torch_logits(reference, ids)
    full = torch_logits(oracle, ids)
    assert np.abs(expected - full).max() > 0.1  # dropping a layer changes the model: the check has teeth
    np.testing.assert_allclose(torch_logits(small, ids), expected, rtol=0, atol=1e-5)

    # our own loader on the written directory: the same logits (max |logit| ~5; measured difference ~8e-6,
    # float32 at the highest matmul precision, so 5e-5 leaves room for another CPU's summation order)
    ours = uniarm_jax.logits(uniarm_jax.load_pretrained(str(out)), ids)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=5e-5)


@pytest.mark.parametrize("first,last,keep", [(2, 0, [0, 1]), (0, 1, [3]), (1, 1, [0, 3]), (4, 0, [0, 1, 2, 3]),
                                             (0, 4, [0, 1, 2, 3])])
def test_truncate_layers_keeps_the_bottom_first_and_top_last(base, first, last, keep):
    path, _ = base
    handle = uniarm_jax.load_pretrained(path)
    small = truncate_layers(handle, first, last)
    assert small.config.num_hidden_layers == len(keep)
    assert handle.config.num_hidden_layers == LAYERS  # the original handle is not modified
    for (name, a), b in zip(_leaves(small.params["layers"]), [x for _, x in _leaves(handle.params["layers"])]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[keep], err_msg=name)
    for key in ("embed_tokens", "norm", "lm_head"):
        if key in handle.params:
            assert small.params[key] is handle.params[key]


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _leaves(tree[k], f"{prefix}/{k}")]
    return [(prefix, tree)]


def test_truncate_copies_the_tokenizer(tmp_path):
    make_tiny_word_llama(tmp_path / "base", vocabulary(), num_hidden_layers=3)
    res = uniarm("truncate", "--base", tmp_path / "base", "--first", 1, "--last", 1, "--out", tmp_path / "small")
    assert res.returncode == 0, res.stderr
    copied = [f for f in os.listdir(tmp_path / "base")
              if f.startswith(("tokenizer", "special_tokens_map", "generation_config"))]
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(copied)
    for fname in copied:
        assert (tmp_path / "small" / fname).read_bytes() == (tmp_path / "base" / fname).read_bytes(), fname
    source, dest = (uniarm_jax.load_tokenizer(str(tmp_path / d)) for d in ("base", "small"))
    text = "Name some fruit. apple banana cherry grape"
    assert dest(text)["input_ids"] == source(text)["input_ids"]
    assert (dest.bos_token_id, dest.eos_token_id, dest.pad_token_id) == (source.bos_token_id, source.eos_token_id,
                                                                       source.pad_token_id)
    assert uniarm_jax.load_pretrained(str(tmp_path / "small")).config.num_hidden_layers == 2


@pytest.mark.parametrize("first,last", [(0, 0), (3, 2), (5, 0), (-1, 2), (2, -1)])
def test_truncate_refuses_bad_counts(base, tmp_path, first, last):
    path, _ = base
    out = tmp_path / "small"
    res = uniarm("truncate", "--base", path, "--first", first, "--last", last, "--out", out)
    assert res.returncode == 2
    assert res.stderr.startswith("uniarm truncate: error: ") and len(res.stderr.strip().splitlines()) == 1
    assert f"cannot keep the first {first} and last {last} layers of a model with {LAYERS}" in res.stderr
    assert f"keeping 1 to {LAYERS} layers" in res.stderr
    assert not out.exists()  # nothing half-written
    with pytest.raises(ConfigError):
        truncate_layers(uniarm_jax.load_pretrained(path), first, last)
