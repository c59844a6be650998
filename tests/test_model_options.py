"""Remat and the dtype policy, against the plain float32 model (the oracle)."""

import jax
import jax.numpy as jnp
import numpy as np

import uniarm_jax
from uniarm_jax.model.llama import Llama


def loss_and_grads(cfg, params, ids):
    def loss(p):
        logits = Llama(cfg).apply({"params": p}, ids)
        return jax.nn.log_softmax(logits)[:, :-1].max(-1).mean()
    return jax.jit(jax.value_and_grad(loss))(params)


def test_remat_changes_nothing_but_memory(tiny_dir):
    handle = uniarm_jax.load_pretrained(tiny_dir)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 96, (2, 12)))
    value, grads = loss_and_grads(handle.config, handle.params, ids)
    value_r, grads_r = loss_and_grads(handle.config.replace(remat=True), handle.params, ids)
    assert abs(float(value) - float(value_r)) <= 1e-6
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bf16_compute_keeps_float32_logits(tiny_dir):
    ref = uniarm_jax.load_pretrained(tiny_dir)
    mixed = uniarm_jax.load_pretrained(tiny_dir, dtype="float32", compute_dtype="bfloat16")
    assert mixed.params["embed_tokens"]["embedding"].dtype == jnp.float32
    ids = np.random.RandomState(1).randint(0, 96, (2, 16))
    a, b = uniarm_jax.logits(ref, ids), uniarm_jax.logits(mixed, ids)
    assert b.dtype == np.float32
    # bf16 keeps 8 mantissa bits: logits of magnitude ~5 agree to a few hundredths, not to 1e-4.
    scale = np.abs(a).max()
    assert 1e-4 < np.abs(a - b).max() <= 0.05 * scale
