"""Guided decoding against oracles: a naive loop that recomputes the base's and the ARMs' full
forward at every step and combines them in numpy; hand-made logits for the rule; one run per α for
mixed batches; the compile cache for recompilation."""

import dataclasses

import jax
import numpy as np
import pytest

import uniarm_jax
from tests.test_adapters import randomise
from tests.tiny_models import make_tiny_llama
from uniarm_jax.decode.generate import generate_continuous, generate_in_chunks
from uniarm_jax.decode.rollout import _rollout, guided_generate
from uniarm_jax.decode.sampling import Sampler, choose_token, combine_logprobs
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter

PROMPTS = [[5, 17, 33, 8, 60, 21, 9], [44, 3], [70, 12, 90, 15]]


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def naive_guided(base, guides, prompt, n, pref=None, weights=None, width=32):
    """Full forwards every step (right-padded to one width: causal, so the padding cannot matter)."""
    seq = list(prompt)
    vocab = base.config.vocab_size
    for _ in range(n):
        padded = np.array([seq + [0] * (width - len(seq))])
        logp = log_softmax(uniarm_jax.logits(base, padded)[0, len(seq) - 1].astype(np.float64))
        for i, g in enumerate(guides):
            conditioned = g.adapter_config is not None and g.adapter_config.takes_pref
            arm = uniarm_jax.logits(g, padded, pref=[pref] if conditioned else None)[0, len(seq) - 1]
            logp = logp + weights[i] * log_softmax(arm[:vocab].astype(np.float64))
        token = int(np.argmax(logp))
        seq.append(token)
        if token in base.config.eos_token_ids:
            break
    return seq[len(prompt):]


def strong_modulation(arm):
    """G and H (the α-dependent part of MoSLoRA) large enough that α visibly changes greedy outputs."""
    arm.adapter = jax.tree_util.tree_map_with_path(
        lambda path, x: 30 * x if jax.tree_util.keystr(path).endswith(("['G']", "['H']")) else x, arm.adapter)
    return arm


def guided_models(root, quantize=None) -> dict:
    """A tiny base (no EOS) with a UniARM and two LoRA ARMs on it, and a weak UniARM on a smaller
    base with the same vocabulary; every model loaded with `quantize`."""
    make_tiny_llama(root / "base", eos_token_id=None)
    make_tiny_llama(root / "small", seed=1, eos_token_id=None, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    base = uniarm_jax.load_pretrained(str(root / "base"), quantize=quantize)
    small = uniarm_jax.load_pretrained(str(root / "small"), quantize=quantize)
    return {
        "base": base,
        "uniarm": strong_modulation(randomise(init_adapter(base, AdapterConfig(kind="moslora")), seed=1)),
        "lora0": randomise(init_adapter(base, AdapterConfig(kind="lora")), seed=2),
        "lora1": randomise(init_adapter(base, AdapterConfig(kind="lora")), seed=3),
        "weak": randomise(init_adapter(small, AdapterConfig(kind="moslora")), seed=4),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return guided_models(tmp_path_factory.mktemp("decode"))


@pytest.mark.parametrize("case", ["uniarm", "genarm", "weak-to-strong", "arm-only"])
def test_cached_guided_greedy_equals_recomputed_full_forwards(models, case):
    base, pref = models["base"], [0.3, 0.7]
    guides = {"uniarm": [models["uniarm"]], "genarm": [models["lora0"], models["lora1"]],
              "weak-to-strong": [models["weak"]], "arm-only": [models["uniarm"]]}[case]
    arm_weights = [1.5] if case == "weak-to-strong" else None
    base_weight = 0.0 if case == "arm-only" else 1.0
    ours, _ = guided_generate(base, guides, PROMPTS, 6, pref=pref, arm_weights=arm_weights, base_weight=base_weight)
    weights = [0.3, 0.7] if case == "genarm" else [1.5] if case == "weak-to-strong" else [1.0]
    for prompt, got in zip(PROMPTS, ours):
        expected = naive_guided(base, guides, prompt, 6, pref, weights) if base_weight else \
            naive_guided_arm_only(guides[0], prompt, 6, pref)
        assert got == expected


def test_guided_greedy_on_every_family_equals_recomputed_full_forwards(family_dir):
    """UniARM on each Llama-family base (biases, q/k norms, Mistral's window of 6 inside the 13-token
    rows): the cached rollout against the naive loop of full forwards."""
    base = uniarm_jax.load_pretrained(family_dir)
    base.config = base.config.replace(eos_token_id=None)
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj")
    arm = strong_modulation(randomise(init_adapter(base, AdapterConfig(kind="moslora", targets=targets)), seed=5))
    ours, _ = guided_generate(base, [arm], PROMPTS, 6, pref=[0.3, 0.7])
    for prompt, got in zip(PROMPTS, ours):
        assert got == naive_guided(base, [arm], prompt, 6, [0.3, 0.7], [1.0])


def naive_guided_arm_only(arm, prompt, n, pref, width=32):
    seq = list(prompt)
    for _ in range(n):
        padded = np.array([seq + [0] * (width - len(seq))])
        seq.append(int(np.argmax(uniarm_jax.logits(arm, padded, pref=[pref])[0, len(seq) - 1])))
    return seq[len(prompt):]


def test_mixed_preference_batch_equals_one_run_per_preference(models):
    prefs = [[1.0, 0.0], [0.5, 0.5], [0.1, 0.9]]
    prompt = PROMPTS[0]
    mixed, _ = guided_generate(models["base"], [models["uniarm"]], [prompt] * 3, 6, pref=prefs)
    for row, pref in enumerate(prefs):
        alone, _ = guided_generate(models["base"], [models["uniarm"]], [prompt], 6, pref=pref)
        assert mixed[row] == alone[0]
    assert len({tuple(m) for m in mixed}) > 1  # the preference changes the output


def test_chunks_equal_one_call_per_chunk_with_the_last_padded(models):
    """Five rows in chunks of two: each chunk is the call a user would make by hand (seed + start, the
    last chunk padded with its last row), only real rows come back, and one shape is compiled."""
    rows = PROMPTS + [[9, 9, 9, 9, 9], [1]]
    prefs = [[1.0, 0.0], [0.5, 0.5], [0.1, 0.9], [0.3, 0.7], [0.8, 0.2]]
    sampler = Sampler(temperature=1.0, top_p=0.9)
    compiled = _rollout._cache_size()
    chunks = list(generate_in_chunks(models["base"], [models["uniarm"]], rows, 5, prefs=prefs, chunk_size=2,
                                     seed=3, sampler=sampler))
    assert _rollout._cache_size() <= compiled + 1  # an unpadded last chunk of one row would compile again
    assert [start for start, _, _ in chunks] == [0, 2, 4] and [len(t) for _, t, _ in chunks] == [2, 2, 1]
    for start, tokens, seconds in chunks:
        index = [start, start + 1] if start + 1 < len(rows) else [start, start]
        expected, _ = guided_generate(models["base"], [models["uniarm"]], [rows[i] for i in index], 5,
                                      pref=[prefs[i] for i in index], sampler=sampler, seed=3 + start)
        assert tokens == expected[:len(tokens)] and seconds > 0
    # no chunk size: every row in one call
    (start, alone, _), = generate_in_chunks(models["base"], [models["uniarm"]], rows, 5, prefs=prefs, seed=3,
                                            sampler=sampler)
    assert alone == guided_generate(models["base"], [models["uniarm"]], rows, 5, pref=prefs, sampler=sampler,
                                    seed=3)[0]


@pytest.mark.parametrize("guides,sampler", [("uniarm", Sampler(temperature=1.0, top_p=0.9)),
                                            ("genarm", Sampler(temperature=0.7, top_k=5))])
def test_continuous_rows_equal_each_row_generated_alone(models, guides, sampler):
    """Nine rows through three slots, some ending early at an EOS: each row's tokens are its
    `guided_generate` alone with seed + its index, whatever rows shared its steps; `skip`ped rows are
    not generated."""
    arms = {"uniarm": [models["uniarm"]], "genarm": [models["lora0"], models["lora1"]]}[guides]
    rows = (PROMPTS + [[9, 9, 9, 9, 9], [1], [33] * 40]) * 2 + [[7, 7]]  # [33] * 40: a second prompt bucket
    prefs = [[w, 1 - w] for w in np.linspace(0, 1, len(rows))]

    def run(base):
        return list(generate_continuous(base, arms, rows, 8, prefs=prefs, sampler=sampler, seed=4, slots=3,
                                        arm_weights=[0.8] * len(arms), skip={2, 5}))

    # The base has no EOS: every row runs to 8 tokens. An EOS only stops a row (its tokens up to there
    # are the same), so taking row 0's third token as EOS ends row 0 early, and a row that never wrote
    # that token still runs to the limit: both kinds of rows share the slots.
    unstopped = {i: tokens for i, tokens, _ in run(models["base"])}
    eos = unstopped[0][2]
    assert any(eos not in tokens for tokens in unstopped.values())
    base = models["base"].__class__(models["base"].config.replace(eos_token_id=int(eos)), models["base"].params)
    out = run(base)
    assert sorted(i for i, _, _ in out) == [i for i in range(len(rows)) if i not in (2, 5)]
    lengths = {}
    for i, tokens, seconds in out:
        alone, _ = guided_generate(base, arms, [rows[i]], 8, pref=[prefs[i]], sampler=sampler, seed=4 + i,
                                   arm_weights=[0.8] * len(arms))
        assert tokens == alone[0], i
        lengths[i] = len(tokens)
        assert seconds >= 0
    assert lengths[0] <= 3 and max(lengths.values()) == 8  # some rows ended early, some ran to the limit


def test_no_recompilation_across_preferences_and_prompts_in_a_bucket(models):
    guided_generate(models["base"], [models["uniarm"]], [PROMPTS[0], PROMPTS[1]], 4, pref=[0.5, 0.5])
    size = _rollout._cache_size()
    guided_generate(models["base"], [models["uniarm"]], [PROMPTS[2], [9, 9, 9, 9, 9]], 4, pref=[[0.9, 0.1], [0, 1]])
    guided_generate(models["base"], [models["uniarm"]], [[1], PROMPTS[0]], 4, pref=[0.2, 0.8], seed=5)
    assert _rollout._cache_size() == size


def test_sampling_is_reproducible_and_respects_top_k(models):
    args = (models["base"], [models["uniarm"]], PROMPTS, 8)
    sampler = Sampler(temperature=1.0, top_k=5, top_p=0.9)
    a, _ = guided_generate(*args, pref=[0.5, 0.5], sampler=sampler, seed=1)
    b, _ = guided_generate(*args, pref=[0.5, 0.5], sampler=sampler, seed=1)
    c, _ = guided_generate(*args, pref=[0.5, 0.5], sampler=sampler, seed=2)
    assert a == b and a != c

    logp = jax.numpy.asarray(np.random.RandomState(0).randn(4, 50))
    top5 = np.argsort(-np.asarray(logp), axis=-1)[:, :5]
    for seed in range(20):
        token = np.asarray(choose_token(logp, jax.random.key(seed), Sampler(1.0, top_k=5)))
        assert all(token[r] in top5[r] for r in range(4))
    nucleus = np.asarray(choose_token(logp, jax.random.key(0), Sampler(1.0, top_p=1e-6)))
    np.testing.assert_array_equal(nucleus, np.argmax(np.asarray(logp), -1))  # only the top token survives


@pytest.mark.parametrize("vocab,scale,p", [(50, 1.0, 0.9), (1000, 3.0, 0.95), (49152, 3.0, 0.95), (300, 0.3, 0.5)])
def test_nucleus_keeps_the_smallest_top_set_reaching_p(vocab, scale, p):
    """The oracle sorts in float64: token i stays iff the more probable tokens hold less than p. A token
    whose mass above lies within 1e-5 of p may round either way in float32; those are left out of the
    comparison (counted: at most a few per row, of thousands kept at 49152)."""
    from uniarm_jax.decode.sampling import _top_p

    logits = np.random.RandomState(vocab).randn(16, vocab) * scale
    kept = np.isfinite(np.asarray(jax.jit(_top_p)(jax.numpy.asarray(logits, np.float32), p)))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for row, q in enumerate(probs):
        order = np.argsort(-q)
        before = np.cumsum(q[order]) - q[order]
        clear = np.abs(before - p) >= 1e-5
        assert np.sum(~clear) <= 4
        np.testing.assert_array_equal(kept[row][order][clear], (before < p)[clear])
        assert np.sum(q[kept[row]]) >= p - 1e-5  # what stays reaches p
    # a per-row p ([batch, 1]) cuts each row at its own p
    rows = np.asarray(jax.jit(_top_p)(jax.numpy.asarray(logits[:2], np.float32), np.array([[0.3], [0.99]])))
    assert np.isfinite(rows[0]).sum() < np.isfinite(rows[1]).sum()


def test_combination_rule_on_hand_made_logits():
    base = np.array([[2.0, 1.0, 0.0, -1.0]])
    arm_a = np.array([[0.0, 3.0, 0.0, 0.0, 9.0]])  # a larger vocabulary: the 5th token is cut
    arm_b = np.array([[1.0, 1.0, 4.0, 0.0]])
    weights = np.array([[0.7, 0.3]])
    ours = np.asarray(combine_logprobs(base, (arm_a, arm_b), weights, 1.0))
    expected = log_softmax(base) + 0.7 * log_softmax(arm_a[:, :4]) + 0.3 * log_softmax(arm_b)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_rows_stop_at_eos_and_are_padded_after(models):
    free, _ = guided_generate(models["base"], [models["uniarm"]], PROMPTS, 8, pref=[0.5, 0.5])
    eos = free[0][2]
    base = models["base"]
    stopping = base.__class__(base.config.replace(eos_token_id=int(eos)), base.params)
    stopped, steps = guided_generate(stopping, [models["uniarm"]], PROMPTS, 8, pref=[0.5, 0.5])
    for row, toks in enumerate(free):
        expect = toks[: toks.index(eos) + 1] if eos in toks else toks
        assert stopped[row] == expect


def test_bad_decoding_input_is_refused_before_compiling(models):
    base, arm = models["base"], models["uniarm"]
    with pytest.raises(ConfigError, match=r"preference vector \[0.6, 0.6\] sums to 1.2"):
        guided_generate(base, [arm], PROMPTS, 4, pref=[0.6, 0.6])
    with pytest.raises(ConfigError, match="needs a preference vector of 2 weights"):
        guided_generate(base, [arm], PROMPTS, 4)
    with pytest.raises(ConfigError, match=r"preference vector\(s\) \[0.2, 0.3, 0.5\] must have 2 entries each"):
        guided_generate(base, [models["lora0"], models["lora1"]], PROMPTS, 4, pref=[0.2, 0.3, 0.5])
    with pytest.raises(ConfigError, match="top_p must be in"):
        Sampler(1.0, top_p=0.0)


def test_weak_to_strong_with_the_base_sharded_over_the_tensor_axis(models, tmp_path):
    """The big base split 8 ways over `tensor`, the small ARM by its own shapes: the same tokens."""
    from uniarm_jax.hf.checkpoints import export_hf
    from uniarm_jax.model.sharding import make_mesh

    mesh = make_mesh(1, 1, 8)
    export_hf(models["base"].params, models["base"].config, str(tmp_path / "base"))
    export_hf(models["weak"].params, models["weak"].config, str(tmp_path / "weak"))
    base = uniarm_jax.load_pretrained(str(tmp_path / "base"), mesh=mesh)
    assert base.params["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec[2] == "tensor"
    weak = dataclasses.replace(uniarm_jax.load_pretrained(str(tmp_path / "weak"), mesh=mesh),
                               adapter_config=models["weak"].adapter_config, adapter=models["weak"].adapter)
    sharded, _ = guided_generate(base, [weak], PROMPTS, 6, pref=[0.3, 0.7], arm_weights=[1.5])
    single, _ = guided_generate(models["base"], [models["weak"]], PROMPTS, 6, pref=[0.3, 0.7], arm_weights=[1.5])
    assert sharded == single
