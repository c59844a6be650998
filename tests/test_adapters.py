"""Adapters against oracles: the base model at init, a direct numpy computation of docs/methods.md's
formulas (ΔW(α) materialised here, never in the library) run through transformers' PyTorch Llama,
per-example α, frozen base weights, and merging."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import uniarm_jax
from tests.tiny_models import make_tiny_llama
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter, merge_adapter, unmerge_adapter
from uniarm_jax.model.llama import Llama

CONFIGS = {
    "lora": AdapterConfig(kind="lora"),
    "pblora": AdapterConfig(kind="pblora"),
    "moslora": AdapterConfig(kind="moslora"),
    "moslora-scale-nocore": AdapterConfig(kind="moslora", modulation="scale", shared_core=False),
    "moslora-k3-all-targets": AdapterConfig(kind="moslora", num_objectives=3, rank=4,
                                            targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj")),
    "pblora-k3-r2-6": AdapterConfig(kind="pblora", num_objectives=3, rank=8, rank_shared=2,
                                    targets=("v_proj", "up_proj")),
}
GROUP = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
         "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def prefs_for(acfg, batch):
    if not acfg.takes_pref:
        return None
    rng = np.random.RandomState(7)
    return rng.dirichlet(np.ones(acfg.num_objectives), batch).astype(np.float32)


def randomise(handle, seed=0):
    """Every adapter weight random and non-zero (B, G, H included), so each term of the formula counts;
    std 0.1 keeps the deltas the size of the base weights (std 0.2), as trained adapters are."""
    leaves, tree = jax.tree.flatten(handle.adapter)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [0.1 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    handle.adapter = jax.tree.unflatten(tree, leaves)
    return handle


def numpy_delta(p, alpha, acfg):
    """docs/methods.md §1-3 written out in numpy for one layer: (ΔW [d_in, d_out], bias or None)."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    s = acfg.scale
    if acfg.kind == "lora":
        return s * p["A"] @ p["B"], None
    alpha = np.asarray(alpha, np.float64)
    if acfg.kind == "pblora":
        r2 = acfg.ranks[1]
        w2 = (alpha @ p["theta2"]).reshape(r2, r2)
        return s * (p["A1"] @ p["W1"] @ p["B1"] + p["A2"] @ w2 @ p["B2"]), None
    core = p["A"] @ p["S"] if acfg.shared_core else p["A"]
    gamma = 1 + alpha @ p["G"]
    bias = s * (alpha @ p["H"]) @ p["B"] if acfg.modulation == "scale_shift" else None
    return s * core @ np.diag(gamma) @ p["B"], bias


def oracle_logits(base_torch, handle, alpha, ids):
    """transformers' Llama with the numpy ΔW(α) (and bias) added to its weights."""
    acfg = handle.adapter_config
    state = {k: v.clone().double() for k, v in base_torch.state_dict().items()}
    has_bias = acfg.kind == "moslora" and acfg.modulation == "scale_shift"
    cfg = copy.deepcopy(base_torch.config)
    if has_bias:
        cfg.attention_bias = any(GROUP[t] == "self_attn" for t in acfg.targets)
        cfg.mlp_bias = any(GROUP[t] == "mlp" for t in acfg.targets)
    model = transformers.LlamaForCausalLM(cfg).double().eval()
    for name, param in model.state_dict().items():
        if name.endswith(".bias"):
            state[name] = torch.zeros_like(param)
    for target in acfg.targets:
        stacked = handle.adapter["layers"][GROUP[target]][target][acfg.kind]
        for i in range(cfg.num_hidden_layers):
            dw, bias = numpy_delta({k: v[i] for k, v in stacked.items()}, alpha, acfg)
            prefix = f"model.layers.{i}.{GROUP[target]}.{target}"
            state[f"{prefix}.weight"] += torch.from_numpy(dw.T)
            if bias is not None:
                state[f"{prefix}.bias"] += torch.from_numpy(bias)
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("adapters")
    oracle = make_tiny_llama(path, tie_word_embeddings=True)
    return uniarm_jax.load_pretrained(str(path)), oracle


@pytest.fixture(scope="module")
def qwen2_base(tmp_path_factory):
    """A base with biases of its own (Qwen2's q/k/v), for merging a MoSLoRA shift into them."""
    path = tmp_path_factory.mktemp("adapters_qwen2")
    oracle = make_tiny_llama(path, model_type="qwen2")
    return uniarm_jax.load_pretrained(str(path)), oracle


@pytest.mark.parametrize("name", ["lora", "pblora", "moslora"])
def test_at_init_every_kind_leaves_the_base_logits_unchanged(base, name):
    handle, _ = base
    arm = init_adapter(handle, CONFIGS[name], seed=3)
    ids = np.random.RandomState(0).randint(0, 96, (2, 12))
    np.testing.assert_array_equal(uniarm_jax.logits(arm, ids, pref=prefs_for(arm.adapter_config, 2)),
                                  uniarm_jax.logits(handle, ids))


def test_initialisation_follows_methods(base):
    handle, _ = base
    d = handle.config.hidden_size
    lora = init_adapter(handle, CONFIGS["lora"]).adapter["layers"]["self_attn"]["q_proj"]["lora"]
    assert np.abs(lora["A"]).max() <= 1 / np.sqrt(d) and np.abs(lora["A"]).max() > 0.8 / np.sqrt(d)
    assert not np.asarray(lora["B"]).any()
    pb = init_adapter(handle, CONFIGS["pblora"]).adapter["layers"]["self_attn"]["k_proj"]["pblora"]
    assert np.abs(pb["W1"]).max() <= 1 / np.sqrt(4) and np.abs(pb["theta2"]).max() <= 1 / np.sqrt(16)
    assert not np.asarray(pb["B1"]).any() and not np.asarray(pb["B2"]).any()
    mos = init_adapter(handle, CONFIGS["moslora"]).adapter["layers"]["self_attn"]["v_proj"]["moslora"]
    assert np.abs(mos["S"]).max() <= 1 / np.sqrt(8) and np.abs(mos["S"]).max() > 0
    for zero in ("G", "H", "B"):
        assert not np.asarray(mos[zero]).any()
    # layers get different draws
    assert not np.array_equal(np.asarray(lora["A"][0]), np.asarray(lora["A"][1]))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_adapted_logits_equal_numpy_formula_in_transformers(base, name):
    handle, oracle = base
    arm = randomise(init_adapter(handle, CONFIGS[name]))
    ids = np.random.RandomState(1).randint(0, 96, (3, 10))
    prefs = prefs_for(arm.adapter_config, 3)
    ours = uniarm_jax.logits(arm, ids, pref=prefs)
    for row in range(3):
        ref = oracle_logits(oracle, arm, None if prefs is None else prefs[row], ids[row:row + 1])[0]
        diff = np.abs(ours[row] - ref).max()
        assert diff <= 1e-4, f"{name} row {row}: max abs difference {diff}"


@pytest.mark.parametrize("name", ["pblora", "moslora"])
def test_mixed_preference_batch_equals_one_call_per_preference(base, name):
    handle, _ = base
    arm = randomise(init_adapter(handle, CONFIGS[name]))
    ids = np.random.RandomState(2).randint(0, 96, (3, 8))
    prefs = np.array([[1.0, 0.0], [0.3, 0.7], [0.5, 0.5]], np.float32)
    mixed = uniarm_jax.logits(arm, ids, pref=prefs)
    for row in range(3):
        alone = uniarm_jax.logits(arm, ids[row:row + 1], pref=prefs[row])
        # batch 3 vs batch 1 compile to different fp32 reduction orders: equal to 1e-5, not bitwise
        np.testing.assert_allclose(mixed[row], alone[0], atol=1e-5)
    assert np.abs(mixed[0] - uniarm_jax.logits(arm, ids[:1], pref=prefs[1])[0]).max() > 1e-3


@pytest.mark.parametrize("name", ["lora", "pblora", "moslora"])
def test_gradients_reach_only_the_adapter(base, name):
    handle, _ = base
    arm = randomise(init_adapter(handle, CONFIGS[name]))
    acfg = arm.adapter_config
    ids = jnp.asarray(np.random.RandomState(3).randint(0, 96, (2, 8)))
    pref = None if prefs_for(acfg, 2) is None else jnp.asarray(prefs_for(acfg, 2))

    def loss(adapter, params):
        logits = Llama(handle.config, acfg).apply({"params": params, "adapter": adapter}, ids, pref=pref)
        return jax.nn.log_softmax(logits)[:, :-1].max(-1).sum()

    g_adapter, g_base = jax.jit(jax.grad(loss, argnums=(0, 1)))(arm.adapter, handle.params)
    for path, g in jax.tree_util.tree_flatten_with_path(g_adapter)[0]:
        assert np.abs(np.asarray(g)).max() > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"
    for path, g in jax.tree_util.tree_flatten_with_path(g_base)[0]:
        assert not np.asarray(g).any(), f"base weight {jax.tree_util.keystr(path)} is differentiated"


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("name", ["lora", "pblora", "moslora", "moslora-scale-nocore", "moslora-k3-all-targets"])
def test_merged_equals_unmerged(request, family, name):
    """On Qwen2 a MoSLoRA shift on q/k/v is added to the base's own biases and taken off again."""
    handle, _ = request.getfixturevalue({"llama": "base", "qwen2": "qwen2_base"}[family])
    arm = randomise(init_adapter(handle, CONFIGS[name]))
    acfg = arm.adapter_config
    alpha = None if not acfg.takes_pref else prefs_for(acfg, 1)[0]
    ids = np.random.RandomState(4).randint(0, 96, (2, 10))
    merged = merge_adapter(arm, alpha)
    assert merged.adapter is None
    # x(W + ΔW) and xW + (xL)R round differently; with these large random adapters logits reach ~5,
    # so the float32 budget is that of the parity tests, 1e-4.
    np.testing.assert_allclose(uniarm_jax.logits(merged, ids), uniarm_jax.logits(arm, ids, pref=alpha), atol=1e-4)
    restored = unmerge_adapter(merged, acfg, arm.adapter, alpha)
    # W + ΔW - ΔW in float32 is exact up to rounding at the scale of the merged weight.
    flat = lambda tree: {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}
    restored_flat, base_flat, merged_flat = flat(restored.params), flat(handle.params), flat(merged.params)
    assert restored_flat.keys() == base_flat.keys()  # a merged bias the base lacks is gone again
    for key, original in base_flat.items():
        tol = 2 * np.finfo(np.float32).eps * np.abs(merged_flat[key]).max()
        assert np.abs(restored_flat[key] - original).max() <= tol, key
    np.testing.assert_allclose(uniarm_jax.logits(restored, ids, pref=alpha),
                               uniarm_jax.logits(arm, ids, pref=alpha), atol=1e-4)


def test_dropout_only_in_training_and_reproducible_from_its_rng(base):
    """deterministic=True (inference) ignores dropout; training draws it from the "dropout" rng: the
    same key gives the same output, another key another one, and the frozen path is untouched."""
    handle, _ = base
    arm = randomise(init_adapter(handle, AdapterConfig(kind="moslora", dropout=0.5)))
    ids = jnp.asarray(np.random.RandomState(5).randint(0, 96, (2, 8)))
    pref = jnp.asarray([[0.5, 0.5], [0.9, 0.1]])
    model = Llama(handle.config, arm.adapter_config)
    variables = {"params": handle.params, "adapter": arm.adapter}
    run = jax.jit(lambda key: model.apply(variables, ids, pref=pref, deterministic=False, rngs={"dropout": key}))
    a, b, c = run(jax.random.key(0)), run(jax.random.key(0)), run(jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
    inference = model.apply(variables, ids, pref=pref)
    assert np.abs(np.asarray(a) - np.asarray(inference)).max() > 1e-3
    np.testing.assert_allclose(np.asarray(inference), uniarm_jax.logits(arm, np.asarray(ids), pref=np.asarray(pref)),
                               atol=1e-5)
