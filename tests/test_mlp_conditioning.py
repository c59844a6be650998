"""MoSLoRA's `conditioning: mlp` (α -> (γ, β) by a small MLP per adapted projection): γ = 1, β = 0 at
init, the adapter's delta against a numpy MLP, its parameters counted by `uniarm info` (7B shapes:
the count written out by hand), the field saved and loaded with the adapter, and the PEFT and merged
exports at one α read back by peft / transformers. The full model's logits against transformers,
gradients and merging run in test_adapters.py under the "moslora-mlp" config."""

import jax
import numpy as np
import pytest
import transformers

import uniarm_jax
from tests.cli_runner import run_uniarm as uniarm
from tests.test_adapters import randomise
from tests.tiny_models import make_tiny_llama
from uniarm_jax.errors import ConfigError
from uniarm_jax.hf.adapter_files import load_adapter, read_adapter, save_adapter
from uniarm_jax.hf.peft import export_merged, export_peft
from uniarm_jax.model import adapters
from uniarm_jax.model.adapters import MLP_HIDDEN, AdapterConfig
from uniarm_jax.model.arm import init_adapter

MLP = AdapterConfig(kind="moslora", conditioning="mlp", rank=4, num_objectives=3)


def numpy_mlp_delta(p, x, alpha, acfg):
    """Δ = s (γ ⊙ (x A S) + β) B with (γ − 1, β) = SiLU(α C1 + c1) C2 + c2, in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    h = np.asarray(alpha, np.float64) @ p["C1"] + p["c1"]
    out = (h / (1 + np.exp(-h))) @ p["C2"] + p["c2"]
    gamma, beta = 1 + out[:, :acfg.rank], out[:, acfg.rank:]
    u = np.asarray(x, np.float64) @ p["A"] @ p["S"]
    u = u * gamma[:, None] + (beta[:, None] if acfg.modulation == "scale_shift" else 0)
    return acfg.scale * u @ p["B"]


@pytest.mark.parametrize("modulation", ["scale_shift", "scale"])
def test_delta_matches_numpy_and_starts_at_identity(modulation):
    acfg = AdapterConfig(kind="moslora", conditioning="mlp", rank=4, num_objectives=3, modulation=modulation)
    p = adapters.init(jax.random.key(0), 12, 10, acfg)
    assert p["C2"].shape == (MLP_HIDDEN, (2 if modulation == "scale_shift" else 1) * 4)
    assert "G" not in p and "H" not in p
    alpha = np.random.default_rng(0).dirichlet(np.ones(3), 5).astype(np.float32)
    gamma, beta = adapters.moslora_modulation(p, alpha, acfg)
    np.testing.assert_array_equal(gamma, np.ones((5, 4)))  # exactly linear's zero init
    assert beta is None if modulation == "scale" else not np.asarray(beta).any()

    rng = np.random.default_rng(1)
    p = {k: 0.3 * rng.standard_normal(v.shape).astype(np.float32) for k, v in p.items()}
    x = rng.standard_normal((5, 7, 12)).astype(np.float32)
    got = adapters.apply(p, x, alpha, acfg)
    np.testing.assert_allclose(got, numpy_mlp_delta(p, x, alpha, acfg), rtol=1e-5, atol=1e-5)
    # one fixed α reduces to low-rank factors (what the exports write): x L R + bias
    left, right, bias = adapters.low_rank_factors(p, alpha[2], acfg)
    merged = x[2] @ np.asarray(left) @ np.asarray(right) + (0 if bias is None else np.asarray(bias))
    np.testing.assert_allclose(merged, numpy_mlp_delta(p, x[2:3], alpha[2:3], acfg)[0], rtol=1e-5, atol=1e-5)
    # not linear in α: the midpoint's γ is not the mean of the ends' (it would be under linear)
    g = np.asarray(adapters.moslora_modulation(p, np.array([[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0]], np.float32),
                                               acfg)[0])
    assert np.abs(g[2] - (g[0] + g[1]) / 2).max() > 1e-3


def test_info_counts_the_mlp(tmp_path):
    transformers.LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32).save_pretrained(tmp_path)
    counts = {}
    for conditioning in ("linear", "mlp"):
        out = uniarm("info", "--base", str(tmp_path), "--adapter", "moslora", "--conditioning", conditioning)
        assert out.returncode == 0, out.stderr
        counts[conditioning] = int(dict(line.split(": ", 1) for line in out.stdout.splitlines())
                                    ["trainable parameters"])
    r, k, d, per_layer = 8, 2, 4096, 3  # q, k, v of Llama-7B
    shared = r * (d + d) + r * r
    assert counts["linear"] == 32 * per_layer * (shared + 2 * k * r) == 6_300_672  # docs/methods.md §3.2
    assert counts["mlp"] == 32 * per_layer * (shared + k * 16 + 16 + 16 * 2 * r + 2 * r)


def test_saved_loaded_and_exported_at_one_alpha(tmp_path):
    import peft
    import torch

    base_dir = str(tmp_path / "base")
    make_tiny_llama(base_dir)
    base = uniarm_jax.load_pretrained(base_dir)
    arm = randomise(init_adapter(base, MLP))
    save_adapter(arm, str(tmp_path / "arm"))
    assert read_adapter(str(tmp_path / "arm")).adapter_config.conditioning == "mlp"
    again = load_adapter(base, str(tmp_path / "arm"))
    assert again.adapter_config == MLP
    ids = np.random.RandomState(0).randint(0, 96, (2, 6))
    pref = np.array([0.2, 0.5, 0.3], np.float32)
    ours = uniarm_jax.logits(arm, ids, pref=pref)
    np.testing.assert_array_equal(uniarm_jax.logits(again, ids, pref=pref), ours)
    assert AdapterConfig.from_dict({"kind": "moslora"}).conditioning == "linear"  # older files read as before

    export_peft(arm, str(tmp_path / "peft"), pref)
    export_merged(arm, str(tmp_path / "merged"), pref)
    lora = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(base_dir),
                                          str(tmp_path / "peft")).eval()
    merged = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    for model in (lora, merged):
        with torch.no_grad():
            theirs = model(torch.tensor(ids)).logits.numpy()
        assert np.abs(ours - theirs).max() <= 1e-4  # float32, two summation orders


def test_unknown_conditioning_is_refused():
    with pytest.raises(ConfigError, match="MoSLoRA conditioning 'deep' is not one of \\('linear', 'mlp'\\)"):
        AdapterConfig(conditioning="deep")
