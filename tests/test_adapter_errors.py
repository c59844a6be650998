"""Bad adapter input is refused at the API boundary (never inside a jitted function), naming it."""

import re
import subprocess
import sys

import numpy as np
import pytest

import uniarm_jax
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter, merge_adapter


@pytest.fixture(scope="module")
def arm(tiny_dir):
    return init_adapter(uniarm_jax.load_pretrained(tiny_dir), AdapterConfig(kind="moslora"))


@pytest.mark.parametrize("pref, message", [
    ([[0.5, 0.3, 0.2]] * 2, "must have 2 entries each"),
    ([[1.2, -0.2], [0.5, 0.5]], "preference vector [1.2, -0.2] has a negative or non-finite entry"),
    ([[0.5, 0.5], [0.6, 0.6]], "preference vector [0.6, 0.6] sums to 1.2; expected 1"),
    ([[0.5, 0.5]] * 3, "3 preference vectors for a batch of 2 rows"),
    (None, "needs a preference vector of 2 weights (pref: one per row"),
])
def test_bad_preference_is_refused_with_the_vector(arm, pref, message):
    ids = np.zeros((2, 4), np.int64)
    with pytest.raises(ConfigError, match=re.escape(message)):
        uniarm_jax.logits(arm, ids, pref=pref)


@pytest.mark.parametrize("pref, message", [
    ([0.2, 0.2], "preference vector [0.2, 0.2] sums to 0.4"),
    ([1.0], "must have 2 entries each"),
    (None, "needs a preference vector of 2 weights"),
])
def test_merge_refuses_a_bad_preference(arm, pref, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        merge_adapter(arm, pref)


def test_lora_takes_no_preference(tiny_dir):
    lora = init_adapter(uniarm_jax.load_pretrained(tiny_dir), AdapterConfig(kind="lora"))
    with pytest.raises(ConfigError, match="no preference-conditioned adapter"):
        uniarm_jax.logits(lora, np.zeros((1, 3), np.int64), pref=[1.0, 0.0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(targets=("q_proj", "query")), "adapter target(s) ['query'] unknown; valid targets are ('q_proj', 'k_proj',"),
    (dict(rank=0), "adapter rank must be positive; got 0"),
    (dict(kind="pblora", rank=4, rank_shared=4), "PBLoRA splits rank=4 into shared r1=4 and preference r2=0"),
    (dict(kind="pblora", rank=1), "PBLoRA splits rank=1 into shared r1=0"),
    (dict(kind="dora"), "adapter kind 'dora' is not one of"),
    (dict(modulation="shift"), "MoSLoRA modulation 'shift' is not one of"),
])
def test_bad_adapter_config_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        AdapterConfig(**kwargs)


def test_info_counts_llama_7b_adapters_from_shapes(tmp_path):
    import transformers

    transformers.LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32).save_pretrained(tmp_path)
    expected = {"lora": 6291456, "pblora": 6296064, "moslora": 6300672}  # docs/methods.md's figures
    for kind, count in expected.items():
        out = subprocess.run([sys.executable, "-m", "uniarm_jax.commands.main", "info", "--base", str(tmp_path),
                              "--adapter", kind], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f"trainable parameters: {count}\n" in out.stdout
    out = subprocess.run([sys.executable, "-m", "uniarm_jax.commands.main", "info", "--base", str(tmp_path),
                          "--adapter",
                          "lora", "--rank", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and "adapter rank must be positive; got 0" in out.stderr and not out.stdout
