"""The forward sharded over 8 fake CPU devices (data x fsdp x tensor = 2 x 2 x 2) against the
unsharded forward (the oracle), and the load placing each shard straight onto its device."""

import numpy as np
import pytest

import uniarm_jax
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.sharding import make_mesh


def test_sharded_forward_equals_unsharded(tiny_dir):
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded = uniarm_jax.load_pretrained(tiny_dir, mesh=mesh)
    single = uniarm_jax.load_pretrained(tiny_dir)

    q = sharded.params["layers"]["self_attn"]["q_proj"]["kernel"]  # [layers, embed, heads]
    assert tuple(q.sharding.spec) == (None, "fsdp", "tensor")
    assert {s.data.shape for s in q.addressable_shards} == {(q.shape[0], q.shape[1] // 2, q.shape[2] // 2)}
    emb = sharded.params["embed_tokens"]["embedding"]
    assert tuple(emb.sharding.spec) == ("tensor", "fsdp")

    ids = np.random.RandomState(0).randint(0, 96, (4, 16))
    mask = np.ones_like(ids)
    mask[1, :6] = 0
    diff = np.abs(uniarm_jax.logits(sharded, ids, mask) - uniarm_jax.logits(single, ids, mask)).max()
    assert diff <= 1e-5


def test_mesh_must_match_device_count():
    with pytest.raises(ConfigError, match="2 x fsdp=2 x tensor=3 = 12 devices does not match the 8"):
        make_mesh(data=2, fsdp=2, tensor=3)
