"""Device mesh and logical-axis sharding.

Every parameter has logical axis names (`vocab`, `embed`, `heads`, ...); one table maps them to the
mesh axes `data`, `fsdp`, `tensor`. The same code then runs on one CPU, eight fake CPU devices, a GPU,
or a pod slice: only the mesh changes.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from uniarm_jax.errors import ConfigError

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

# parameter path (joined with "/") -> logical axes of that parameter
PARAM_AXES = (
    (r"embed_tokens/embedding", ("vocab", "embed")),
    (r"lm_head/kernel", ("embed", "vocab")),
    (r"layers/self_attn/q_proj/kernel", ("layers", "embed", "heads")),
    (r"layers/self_attn/[kv]_proj/kernel", ("layers", "embed", "kv_heads")),
    (r"layers/self_attn/o_proj/kernel", ("layers", "heads", "embed")),
    (r"layers/mlp/(gate|up)_proj/kernel", ("layers", "embed", "mlp")),
    (r"layers/mlp/down_proj/kernel", ("layers", "mlp", "embed")),
    (r"layers/\w+_layernorm/weight", ("layers", "norm")),
    # merged exports only (MoSLoRA's shift folded into a bias)
    (r"layers/self_attn/q_proj/bias", ("layers", "heads")),
    (r"layers/self_attn/[kv]_proj/bias", ("layers", "kv_heads")),
    (r"layers/(self_attn/o_proj|mlp/down_proj)/bias", ("layers", "embed")),
    (r"layers/mlp/(gate|up)_proj/bias", ("layers", "mlp")),
    (r"norm/weight", ("norm",)),
)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A `data x fsdp x tensor` mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = (data, fsdp, tensor)
    if any(n < 1 for n in shape) or int(np.prod(shape)) != len(devices):
        raise ConfigError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = {int(np.prod(shape))} devices "
                          f"does not match the {len(devices)} devices available")
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def param_logical_axes(path: str) -> tuple:
    for pattern, axes in PARAM_AXES:
        if re.fullmatch(pattern, path):
            return axes
    raise KeyError(f"no logical axes are known for parameter {path!r}")


def logical_sharding(mesh: Mesh, logical: tuple, shape: tuple) -> NamedSharding:
    """NamedSharding of an array with these logical axes. A mesh axis that does not divide its
    dimension (e.g. 3 kv heads over 2 tensor devices) is dropped for that dimension: replication is
    always correct, uneven splits are not always supported."""
    spec, used = [], set()
    for name, dim in zip(logical, shape):
        rule = LOGICAL_RULES[name]
        axes = () if rule is None else (rule,) if isinstance(rule, str) else rule
        kept = []
        for axis in axes:
            size = mesh.shape[axis]
            if axis not in used and dim % (size * int(np.prod([mesh.shape[a] for a in kept]))) == 0:
                kept.append(axis)
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return NamedSharding(mesh, P(*spec))


def param_shardings(mesh: Mesh, shapes) -> dict:
    """A pytree of NamedShardings matching a pytree of parameter shapes."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: logical_sharding(mesh, param_logical_axes(path_str(path)), x.shape), shapes)


def batch_sharding(mesh: Mesh, shape: tuple) -> NamedSharding:
    """Sharding of a `[batch, ...]` input: batch over data (and fsdp), the rest replicated."""
    return logical_sharding(mesh, ("batch",) + ("length",) * (len(shape) - 1), shape)
