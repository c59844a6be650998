"""The train step against oracles: the unsharded step (for 8 fake devices), one big micro-batch (for
gradient accumulation), and the frozen base (bitwise unchanged)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import uniarm_jax
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter
from uniarm_jax.model.sharding import make_mesh, param_shardings
from uniarm_jax.train.losses import ObjectiveConfig
from uniarm_jax.train.step import ArmSteps, check_batch_fits, init_state, make_optimizer


def pair_batch(b=8, length=12, k=2, seed=0):
    rng = np.random.RandomState(seed)
    attention = np.ones((b, 2, length), np.int32)
    attention[:, 1, -3:] = 0
    loss_mask = np.zeros((b, 2, length), np.int32)
    loss_mask[:, :, 5:] = 1
    return {"input_ids": rng.randint(3, 96, (b, 2, length)).astype(np.int32), "attention_mask": attention,
            "loss_mask": loss_mask * attention, "labels": rng.randint(0, 2, (b, k)).astype(np.int32),
            "scores": np.full((b, 2, k), np.nan, np.float32)}


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
