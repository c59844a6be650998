"""Device mesh and logical-axis sharding.

Every parameter has logical axis names (`vocab`, `embed`, `heads`, ...); one table maps them to the
mesh axes `data`, `fsdp`, `tensor`. The same code then runs on one CPU, eight fake CPU devices, a GPU,
or a pod slice: only the mesh changes.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from uniarm_jax.errors import ConfigError
from uniarm_jax.model.projections import PROJECTIONS

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or axes); None means replicated.
LOGICAL_RULES = {
    "batch": ("data", "fsdp"),
    "length": None,
    "layers": None,
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "norm": None,
}

# parameter path (joined with "/") -> logical axes of that parameter; the projections from their table
PARAM_AXES = {
    "embed_tokens/embedding": ("vocab", "embed"),
    "lm_head/kernel": ("embed", "vocab"),
    "norm/weight": ("norm",),
    "layers/input_layernorm/weight": ("layers", "norm"),
    "layers/post_attention_layernorm/weight": ("layers", "norm"),
    "layers/self_attn/q_norm/weight": ("layers", "norm"),  # per head, over head_dim (Qwen3): replicated
    "layers/self_attn/k_norm/weight": ("layers", "norm"),
}
for _p in PROJECTIONS:
    PARAM_AXES[f"{_p.path}/kernel"] = ("layers", _p.d_in, _p.d_out)
    PARAM_AXES[f"{_p.path}/kernel_q"] = ("layers", _p.d_in, _p.d_out)  # an int8 base: as the kernel,
    PARAM_AXES[f"{_p.path}/scale"] = ("layers", f"{_p.d_in}_groups", _p.d_out)  # its scales: groups of rows
    PARAM_AXES[f"{_p.path}/bias"] = ("layers", _p.d_out)  # Qwen2's q/k/v; merged MoSLoRA shifts


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A `data x fsdp x tensor` mesh over `devices` (default: all devices of all processes). One axis
    may be -1: all the devices the other two leave."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    free = [axis for axis, n in sizes.items() if n == -1]
    fixed = int(np.prod([n for n in sizes.values() if n != -1]))
    if len(free) > 1 or any(n < 1 and n != -1 for n in sizes.values()):
        raise ConfigError(f"mesh {sizes}: every axis must be a positive size, at most one of them -1 (the rest)")
    if free:
        if len(devices) % fixed:
            raise ConfigError(f"mesh {sizes}: the fixed axes ({fixed} devices) do not divide the "
                              f"{len(devices)} devices available")
        sizes[free[0]] = len(devices) // fixed
    shape = tuple(sizes.values())
    if int(np.prod(shape)) != len(devices):
        raise ConfigError(f"mesh data={shape[0]} x fsdp={shape[1]} x tensor={shape[2]} = {int(np.prod(shape))} "
                          f"devices does not match the {len(devices)} devices available")
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def parse_mesh(text: str) -> Mesh:
    """'1,1,8' (data,fsdp,tensor, one of them may be -1) -> the mesh."""
    try:
        data, fsdp, tensor = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"mesh {text!r} is not three integers data,fsdp,tensor (e.g. 1,1,8)") from None
    return make_mesh(data, fsdp, tensor)


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def param_logical_axes(path: str) -> tuple:
    if path not in PARAM_AXES:
        raise KeyError(f"no logical axes are known for parameter {path!r}")
    return PARAM_AXES[path]


def logical_sharding(mesh: Mesh, logical: tuple, shape: tuple, head_dim: int | None = None) -> NamedSharding:
    """NamedSharding of an array with these logical axes. A mesh axis that does not divide its
    dimension is dropped for that dimension: replication is always correct, uneven splits are not
    always supported. The fused `heads` / `kv_heads` dimensions (`heads · head_dim`) count in whole
    heads: 9 heads (576 = 9 · 64) over 2 tensor devices stay replicated, never 4.5 heads a device."""
    spec, used = [], set()
    for name, dim in zip(logical, shape):
        rule = LOGICAL_RULES[name.removesuffix("_groups")]  # an int8 scale's row groups: as the rows
        axes = () if rule is None else (rule,) if isinstance(rule, str) else rule
        units = dim // head_dim if name in ("heads", "kv_heads") and head_dim else dim
        kept = []
        for axis in axes:
            size = mesh.shape[axis]
            if axis not in used and units % (size * int(np.prod([mesh.shape[a] for a in kept]))) == 0:
                kept.append(axis)
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return NamedSharding(mesh, P(*spec))


def param_shardings(mesh: Mesh, shapes, head_dim: int) -> dict:
    """A pytree of NamedShardings matching a pytree of parameter shapes (heads kept whole)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: logical_sharding(mesh, param_logical_axes(path_str(path)), x.shape, head_dim), shapes)


def batch_sharding(mesh: Mesh, shape: tuple) -> NamedSharding:
    """Sharding of a `[batch, ...]` input: batch over data (and fsdp), the rest replicated."""
    return logical_sharding(mesh, ("batch",) + ("length",) * (len(shape) - 1), shape)
