"""Adapter dropout masks from Threefry-2x32 written as plain elementwise ops.

jax's own Threefry lowers to a rolled loop on CPU (to compile fast), which writes every round's
state back to memory: the dropout of a LoRA train step spent ~16% of its time there (bench/train.py,
SmolLM2, 2 cores). The same 20 rounds as elementwise ops fuse into one loop over the mask, and the
rounds stay in registers. The bits are Threefry-2x32's own (tests/test_dropout.py checks them against
`jax.extend.random.threefry_2x32`): the key words come from the dropout rng, the counter is each
element's index, so a sharded mask is the same as the unsharded one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
PARITY = 0x1BD11BDA  # Threefry's key-schedule constant
DROPOUT_MASK = "adapter_dropout_mask"  # its name for the remat policy (model/llama.py keeps it)


def threefry2x32(key: tuple[jax.Array, jax.Array], x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds) of the counter pair `(x0, x1)` under the key words `key`, uint32."""
    k0, k1 = key
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(PARITY))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x1 ^ x0
        x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def random_words(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 random words of `shape`, two per Threefry counter: the counter numbers the element pairs
    along the last axis, row-major, and is built from per-axis iotas (no flat reshape) so that a
    sharded `shape` is generated shard by shard."""
    key = tuple(jax.random.bits(rng, (2,), jnp.uint32))
    *lead, last = shape or (1,)
    half = (*lead, (last + 1) // 2)
    if np.prod(half) >= 2**32:
        raise ValueError(f"a dropout mask of shape {shape} has too many elements for 32-bit counters")
    strides = np.cumprod((1, *half[::-1]))[:-1][::-1]
    counter = sum(jax.lax.broadcasted_iota(jnp.uint32, half, axis) * np.uint32(stride)
                  for axis, stride in enumerate(strides))
    y0, y1 = threefry2x32(key, counter, jnp.zeros_like(counter))
    words = jnp.stack([y0, y1], axis=-1).reshape(*lead, 2 * half[-1])[..., :last]
    return words.reshape(shape)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout: each element kept with probability 1 - rate (to 2**-32) and scaled by
    1 / (1 - rate); `x` itself when there is no rng (inference) or the rate is 0."""
    if rng is None or rate == 0.0:
        return x
    threshold = np.uint32(min(round(rate * 2**32), 2**32 - 1))
    keep = checkpoint_name(random_words(rng, x.shape) >= threshold, DROPOUT_MASK)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
