"""The forward sharded over 8 fake CPU devices (data x fsdp x tensor = 2 x 2 x 2) against the
unsharded forward (the oracle), and the load placing each shard straight onto its device."""

import numpy as np
import pytest

import uniarm_jax
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.sharding import make_mesh


def test_sharded_forward_equals_unsharded(family_dir):
    """Per family: biases sharded with their projection's output, Qwen3's per-head norms replicated."""
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded = uniarm_jax.load_pretrained(family_dir, mesh=mesh)
    single = uniarm_jax.load_pretrained(family_dir)
    attn = sharded.params["layers"]["self_attn"]
    if "bias" in attn["q_proj"]:
        assert tuple(attn["q_proj"]["bias"].sharding.spec) == (None, "tensor")
    if single.config.qk_norm:
        assert tuple(attn["q_norm"]["weight"].sharding.spec) in ((), (None, None))

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


@pytest.mark.parametrize("heads, kv_heads, tensor", [(9, 3, 2), (6, 2, 4), (8, 4, 2), (8, 2, 4)])
def test_no_head_is_split_over_the_tensor_axis(heads, kv_heads, tensor):
    """Every shard of a q/k/v/o kernel holds whole heads (SmolLM2's 9 heads / 3 KV heads over 2
    devices stay replicated: 576 and 192 divide by 2, 9 and 3 heads do not); where the heads divide,
    the heads dimension is sharded."""
    from uniarm_jax.model.config import LlamaConfig
    from uniarm_jax.model.llama import param_shapes
    from uniarm_jax.model.sharding import param_shardings

    head_dim = 64
    cfg = LlamaConfig(vocab_size=128, hidden_size=heads * head_dim, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim)
    mesh = make_mesh(data=8 // tensor, fsdp=1, tensor=tensor)
    shapes = param_shapes(cfg)
    shardings = param_shardings(mesh, shapes, head_dim)
    for name, dim, count in (("q_proj", 2, heads), ("k_proj", 2, kv_heads), ("v_proj", 2, kv_heads),
                             ("o_proj", 1, heads)):
        shape = shapes["layers"]["self_attn"][name]["kernel"].shape
        sharding = shardings["layers"]["self_attn"][name]["kernel"]
        per_device = sharding.shard_shape(shape)[dim]
        assert per_device % head_dim == 0, (name, shape, sharding.spec)
        assert (per_device < shape[dim]) == (count % tensor == 0), (name, sharding.spec)
