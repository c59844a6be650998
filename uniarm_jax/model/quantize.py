"""int8 weight-only bases: symmetric int8 kernels with a scale per group of 64 input rows of each
output column, for the frozen projections.

A quantized projection holds `kernel_q` (int8 `[d_in, d_out]`, the kernel's own layout and logical
axes) and `scale` (float32 `[d_in / group, d_out]`) in place of `kernel`, so `kernel ≈ kernel_q *
scale` repeated over each group's rows. Groups of 64 rows (`GROUP`) where 64 divides `d_in` (every
released Llama-family width), else one group per column. The matmul dequantizes the layer's kernel in
the compute dtype (one elementwise pass XLA fuses, as the int8 → float convert alone was) and
accumulates in float32. Only the decoder's q/k/v/o/gate/up/down kernels are quantized; the embedding,
the output head, norms and biases stay in the parameter dtype, and adapters stay float32
(docs/design.md §2: why, and what it costs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import ConfigError

QUANTIZATIONS = ("int8",)
LEAVES = ("kernel_q", "scale")  # a quantized projection's leaves, in place of "kernel"
INT8_MAX = 127                  # symmetric: -127..127, so -q is always representable
GROUP = 64                      # input rows per scale (where it divides d_in)


def check_quantize(value, field: str = "quantize") -> None:
    """None (float weights) or one of QUANTIZATIONS; anything else is refused listing them."""
    if value is not None and value not in QUANTIZATIONS:
        raise ConfigError(f"{field}={value!r} is not a supported quantization; expected one of "
                          f"{list(QUANTIZATIONS)} (or none for float weights)")


def group_size(d_in: int) -> int:
    """Rows per scale of a kernel with `d_in` input rows: GROUP where it divides them, else all."""
    return GROUP if d_in % GROUP == 0 else d_in


def int8_scales(kernel: np.ndarray) -> np.ndarray:
    """Scales of a `[..., d_in, d_out]` kernel, float32 `[..., d_in / group, d_out]`: max |w| over each
    group's rows / 127 (1 for an all-zero group, which quantizes to zeros either way). A group with a
    NaN or an infinity gets a non-finite scale, which the loader refuses."""
    *lead, d_in, d_out = kernel.shape
    g = group_size(d_in)
    grouped = kernel.astype(np.float32, copy=False).reshape(*lead, d_in // g, g, d_out)
    amax = np.abs(grouped).max(axis=-2)
    return np.where(amax == 0, 1.0, amax / INT8_MAX).astype(np.float32)


def to_int8(kernel: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The kernel's int8 values under `scales` (round to nearest even, within ±127)."""
    q = np.rint(kernel.astype(np.float32, copy=False) / _per_row(scales, kernel.shape[-2]))
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8)


def _per_row(scales, d_in: int):
    """`[..., groups, d_out]` scales repeated to `[..., d_in, d_out]` (numpy or jax)."""
    xp = np if isinstance(scales, np.ndarray) else jnp
    return xp.repeat(scales, d_in // scales.shape[-2], axis=-2)


def int8_dot(x: jax.Array, kernel_q: jax.Array, scale: jax.Array, dtype) -> jax.Array:
    """`x @ (kernel_q * scale)`: the kernel dequantized in the compute dtype (int8 values are exact in
    every float dtype), accumulated in float32."""
    kernel = (kernel_q.astype(jnp.float32) * _per_row(scale.astype(jnp.float32), kernel_q.shape[-2])).astype(dtype)
    return jnp.dot(x.astype(dtype), kernel, preferred_element_type=jnp.float32).astype(dtype)


def require_float(cfg, action: str) -> None:
    """Refuses `action` (which writes float kernels) on an int8 base: dequantized kernels are not the
    model's weights, so nothing is written from them."""
    if cfg.quantize is not None:
        raise ConfigError(f"{action} needs the base's float weights; this base is loaded with quantize="
                          f"{cfg.quantize!r}: load it without quantize")
