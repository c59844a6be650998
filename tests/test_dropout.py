"""Adapter dropout masks (model/dropout.py): Threefry-2x32's own bits (jax's implementation is the
oracle), the drop rate, independence of the keys, and the same mask whatever the sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from uniarm_jax.model.dropout import dropout, random_words, threefry2x32
from uniarm_jax.model.sharding import make_mesh


def test_threefry_is_jax_threefry():
    """The elementwise rounds give jax's Threefry-2x32 bit for bit (jax pairs the first half of the
    counters with the second), on random keys and counters."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        key = rng.integers(0, 2**32, 2, dtype=np.uint32)
        count = rng.integers(0, 2**32, 64, dtype=np.uint32)
        ours = threefry2x32(tuple(jnp.asarray(key)), jnp.asarray(count[:32]), jnp.asarray(count[32:]))
        np.testing.assert_array_equal(np.concatenate([np.asarray(o) for o in ours]),
                                      np.asarray(threefry_2x32(jnp.asarray(key), jnp.asarray(count))))


@pytest.mark.parametrize("shape", [(40, 50), (3, 5, 7), (11,), ()])
def test_words_distinct_and_shaped(shape):
    """Every element gets its own counter (odd last axes included), so no two words repeat (for 2000
    random words a repeat has odds of 1 in 2000; the keys here are fixed, and have none)."""
    words = np.asarray(random_words(jax.random.key(1), shape))
    assert words.shape == shape and words.dtype == np.uint32
    assert np.unique(words).size == words.size


def test_drop_rate_and_scale():
    """Each element is dropped with probability `rate`: over 1.1M elements the share lies within 5
    binomial standard deviations (a false alarm about once in 3 million runs); the kept ones are x / (1 -
    rate), and the masks of two keys are as independent as two coin sequences."""
    x = jnp.full((2, 96, 576), 3.0)
    n = x.size * 10
    for rate in (0.05, 0.5):
        outs = [np.asarray(dropout(x, rate, jax.random.key(seed))) for seed in range(10)]
        dropped = np.stack(outs) == 0
        assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
        np.testing.assert_allclose(np.stack(outs)[~dropped], 3.0 / (1 - rate), rtol=1e-6)
        both = (dropped[0] & dropped[1]).mean()
        assert abs(both - rate**2) < 5 * np.sqrt(rate**2 * (1 - rate**2) / x.size)


def test_off_without_rng_or_rate():
    x = jnp.arange(6.0)
    assert dropout(x, 0.1, None) is x and dropout(x, 0.0, jax.random.key(0)) is x


def test_sharded_mask_equals_unsharded():
    """Counters come from per-axis iotas, so a mask drawn under a batch sharding over 8 devices is
    the unsharded mask, element for element."""
    mesh = make_mesh(data=-1)
    x = jnp.ones((8, 6, 10))
    draw = jax.jit(lambda x, key: dropout(x, 0.3, key))
    sharded = jax.jit(lambda x, key: dropout(x, 0.3, key),
                      in_shardings=(NamedSharding(mesh, P("data")), None),
                      out_shardings=NamedSharding(mesh, P("data")))
    key = jax.random.key(4)
    np.testing.assert_array_equal(np.asarray(sharded(x, key)), np.asarray(draw(x, key)))
