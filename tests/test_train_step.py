"""The train step against oracles: the full forward on each response's own sequence (for the packed
rows' loss and gradients), the unsharded step (for 8 fake devices), one big micro-batch (for gradient
accumulation), and the frozen base (bitwise unchanged)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import uniarm_jax
from tests.pairs import random_pairs
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter
from uniarm_jax.model.llama import Llama
from uniarm_jax.model.sharding import make_mesh, param_shardings
from uniarm_jax.train.config import OptimSection
from uniarm_jax.train.losses import ObjectiveConfig, model_logprob_fn, objective_loss
from uniarm_jax.train.step import ArmSteps, check_batch_fits, init_state, make_optimizer


def pair_batch(b=8, k=2, seed=0):
    return random_pairs(b, k, seed, length=20, response_length=8)[0]


def run_steps(handle, mesh, acfg, ocfg, batches, micro_batches=1, dropout=True):
    acfg = acfg if dropout else AdapterConfig(**{**acfg.to_dict(), "dropout": 0.0, "targets": acfg.targets})
    arm = init_adapter(handle, acfg, seed=1)
    optimizer, _ = make_optimizer(1e-2, 1, 10, 0.05, 1.0)
    steps = ArmSteps(handle.config, acfg, ocfg, optimizer, mesh, micro_batches)
    state = init_state(arm.adapter, optimizer)
    params = jax.device_put(handle.params, param_shardings(mesh, handle.params, handle.config.head_dim))
    losses = []
    for batch in batches:
        batch = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()}, steps.batch_sharding)
        state, metrics = steps.train_step(state, params, batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    assert steps._jitted["train"]._cache_size() == 1  # one compilation for every step of one shape
    return state, losses


CASES = {
    "uniarm-moslora": (AdapterConfig(kind="moslora"), ObjectiveConfig(method="uniarm", betas=(0.5, 0.1))),
    "parm-pblora": (AdapterConfig(kind="pblora"), ObjectiveConfig(method="parm", betas=(0.5, 0.1))),
    "genarm-lora": (AdapterConfig(kind="lora"), ObjectiveConfig(method="genarm", betas=(0.5, 0.1), objective=1)),
}


def unpacked_logprob_fn(model, variables, pairs, b):
    """Today's computation before packing, as the oracle: every response in a row of its own (prompt +
    response, right-padded), the full forward's logits at every position, the response tokens' sum."""
    seqs = [s for pair in pairs["sequences"] for s in pair]
    length = max(map(len, seqs))
    ids, attention, scored = (np.zeros((len(seqs), length), np.int32) for _ in range(3))
    for row, (seq, p) in enumerate(zip(seqs, np.repeat(pairs["prompt_lens"], 2))):
        ids[row, :len(seq)], attention[row, :len(seq)], scored[row, p:len(seq)] = seq, 1, 1

    def fn(rows, pref):  # rows: the C copies of each pair adjacent (pair-major), as pair_logprobs makes them
        copies = rows["input_ids"].shape[0] // b
        def tile(x):
            return jnp.broadcast_to(jnp.asarray(x).reshape(b, 1, 2, -1), (b, copies, 2, length)).reshape(-1, length)
        logits = model.apply(variables, tile(ids), tile(attention), None if pref is None else jnp.repeat(pref, 2, 0))
        logp = jax.nn.log_softmax(logits[:, :-1], -1)
        lp = jnp.take_along_axis(logp, tile(ids)[:, 1:, None], -1)[..., 0] * tile(scored)[:, 1:]
        return lp.sum(-1).reshape(-1, 2)
    return fn


def test_packed_loss_and_gradients_equal_the_unpacked_forward(family_dir):
    """UniARM (k + 1 conditionings per pair) on every Llama family (Mistral's window 6 reaches inside
    the packed rows): see `check_packed_against_unpacked`."""
    check_packed_against_unpacked(family_dir, "uniarm-moslora")


def test_packed_genarm_loss_and_gradients_equal_the_unpacked_forward(tiny_dir):
    check_packed_against_unpacked(tiny_dir, "genarm-lora")


def test_query_blocks_give_the_loss_and_gradients_of_one_block(tiny_dir, monkeypatch):
    """Packed rows of 24 tokens in query blocks of 7 (the last one short; each block over the keys up
    to its last query) against the same rows in one block (the oracle, set by a block longer than any
    row): loss to rtol 1e-5 and gradients to 1e-5 of their largest entry, the packed test's float32
    rounding (a left-out key is one the mask zeroes; the sums only change order: seen ~3e-6)."""
    from uniarm_jax.model import llama
    acfg, ocfg = CASES["uniarm-moslora"]
    acfg = AdapterConfig(**{**acfg.to_dict(), "dropout": 0.0, "targets": acfg.targets})
    handle = uniarm_jax.load_pretrained(tiny_dir)
    adapter = jax.tree.map(lambda x: x + 0.1, init_adapter(handle, acfg, seed=1).adapter)
    batch = {k: jnp.asarray(v) for k, v in random_pairs(4, 2, seed=5, length=24, response_length=8)[0].items()}
    model = Llama(handle.config, acfg)

    def loss(adapter):
        fn = model_logprob_fn(model, {"params": handle.params, "adapter": adapter})
        return objective_loss(fn, batch, jax.random.key(4), ocfg)[0]

    results = {}
    for block in (1000, 7):
        monkeypatch.setattr(llama, "ATTENTION_BLOCK", block)
        results[block] = jax.value_and_grad(loss)(adapter)  # traced anew: the block is read at trace time
    (ref, ref_grad), (ours, ours_grad) = results[1000], results[7]
    np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ours_grad), jax.tree.leaves(ref_grad)):
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * float(np.abs(b).max()))


def check_packed_against_unpacked(model_dir, case):
    """The packed rows (prompt once, responses attending to it and to themselves) give the loss and the
    adapter gradients of every response computed in its own sequence, within float32 rounding
    (rtol 1e-5 on the loss; gradients to 1e-5 of their largest entry). The adapter's B is random, so
    every adapted projection changes the forward."""
    acfg, ocfg = CASES[case]
    acfg = AdapterConfig(**{**acfg.to_dict(), "dropout": 0.0, "targets": acfg.targets})
    handle = uniarm_jax.load_pretrained(model_dir)
    adapter = init_adapter(handle, acfg, seed=1).adapter
    keys = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(adapter))))
    adapter = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape), adapter)
    batch, pairs = random_pairs(4, 2, seed=3, length=24, response_length=8)
    model = Llama(handle.config, acfg)

    def loss(adapter, make_fn):
        fn = make_fn(model, {"params": handle.params, "adapter": adapter})
        return objective_loss(fn, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.key(4), ocfg)[0]

    ours, ours_grad = jax.value_and_grad(loss)(adapter, model_logprob_fn)
    ref, ref_grad = jax.value_and_grad(loss)(adapter, lambda m, v: unpacked_logprob_fn(m, v, pairs, 4))
    np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ours_grad), jax.tree.leaves(ref_grad)):
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * float(np.abs(b).max()))


def test_sharded_step_equals_unsharded(tiny_dir):
    """UniARM on MoSLoRA: the objective with the most stacked conditionings; 2 micro-batches, 2 steps."""
    acfg, ocfg = CASES["uniarm-moslora"]
    handle = uniarm_jax.load_pretrained(tiny_dir)
    batches = [pair_batch(seed=s) for s in range(2)]
    single, losses_1 = run_steps(handle, make_mesh(devices=jax.devices()[:1]), acfg, ocfg, batches, 2)
    sharded, losses_8 = run_steps(handle, make_mesh(2, 2, 2), acfg, ocfg, batches, 2)
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(sharded["adapter"]), jax.tree.leaves(single["adapter"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert int(sharded["step"]) == 2


def test_accumulated_micro_batches_equal_one_big_batch(tiny_dir):
    """Without dropout (whose masks differ per micro-batch), 4 micro-batches give the big batch's step.
    GenARM's loss is a mean over rows, so the mean of micro-batch means is the big mean."""
    acfg, ocfg = CASES["genarm-lora"]
    handle = uniarm_jax.load_pretrained(tiny_dir)
    mesh = make_mesh(devices=jax.devices()[:1])
    one, l1 = run_steps(handle, mesh, acfg, ocfg, [pair_batch()], 1, dropout=False)
    four, l4 = run_steps(handle, mesh, acfg, ocfg, [pair_batch()], 4, dropout=False)
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(four["adapter"]), jax.tree.leaves(one["adapter"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_training_leaves_the_base_bitwise_unchanged(tiny_dir):
    handle = uniarm_jax.load_pretrained(tiny_dir)
    before = jax.tree.map(np.array, handle.params)
    state, _ = run_steps(handle, make_mesh(2, 2, 2), *CASES["uniarm-moslora"], [pair_batch()], 1)
    for a, b in zip(jax.tree.leaves(handle.params), jax.tree.leaves(before)):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert any(np.abs(np.asarray(x)).max() > 0 for x in jax.tree.leaves(state["adapter"]))


def test_batch_that_does_not_divide_the_data_axis_is_refused():
    mesh = make_mesh(4, 2, 1)
    with pytest.raises(ConfigError, match=r"a micro-batch of 6 pairs \(batch_size=12 / micro_batches=2\) does not "
                                          r"divide over the 8 data-parallel devices \(mesh data=4 x fsdp=2\)"):
        check_batch_fits(12, 2, mesh)
    with pytest.raises(ConfigError, match="batch_size=10 does not divide into micro_batches=4"):
        check_batch_fits(10, 4, mesh)


def numpy_adamw(params, grads_by_step, rates, weight_decay, b1=0.9, b2=0.999, eps=1e-8):
    """AdamW written out (optax's defaults, decay decoupled and scaled by the rate), one rate per leaf
    and step: the oracle for the per-parameter rates."""
    m = {k: np.zeros_like(p) for k, p in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    params = dict(params)
    for t, grads in enumerate(grads_by_step, 1):
        for k, g in grads.items():
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            step = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps) + weight_decay * params[k]
            params[k] = params[k] - rates[k][t - 1] * step
    return params


def test_preference_parameters_take_their_own_learning_rate():
    """MoSLoRA's G and H (and PBLoRA's θ2) at preference_lr_ratio times the rate, every other tensor at
    the rate, against AdamW written in numpy (float64): optax's float32 after four steps is within 1e-5
    relative (float32 rounding of m / √v, times the ratio's larger steps)."""
    rng = np.random.default_rng(0)
    shapes = {"A": (6, 4), "B": (4, 5), "S": (4, 4), "G": (2, 4), "H": (2, 4)}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(4)]
    optimizer, schedule = make_optimizer(1e-2, 2, 4, 0.05, None, preference_lr_ratio=8.0)
    tree = {"q_proj": {"moslora": {k: jnp.asarray(p) for k, p in params.items()}}}
    state = optimizer.init(tree)
    for g in grads:
        updates, state = optimizer.update({"q_proj": {"moslora": g}}, state, tree)
        tree = jax.tree.map(lambda p, u: p + u, tree, updates)
    rates = {k: [float(schedule(t)) * (8.0 if k in "GH" else 1.0) for t in range(4)] for k in shapes}
    expected = numpy_adamw({k: p.astype(np.float64) for k, p in params.items()},
                           [{k: g.astype(np.float64) for k, g in s.items()} for s in grads], rates, 0.05)
    for k in shapes:
        np.testing.assert_allclose(np.asarray(tree["q_proj"]["moslora"][k]), expected[k], rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="optim.preference_lr_ratio is 0.0; expected a positive"):
        OptimSection(preference_lr_ratio=0.0)
