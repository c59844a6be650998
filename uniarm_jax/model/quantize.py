"""int8 weight-only bases: per-channel symmetric int8 kernels for the frozen projections.

A quantized projection holds `kernel_q` (int8 `[d_in, d_out]`, the kernel's own layout and logical
axes) and `scale` (float32 `[d_out]`, one per output column, sharded like the output axis) in place of
`kernel`, so `kernel ≈ kernel_q * scale`. The matmul reads the int8 array and scales its output,
`(x @ kernel_q) * scale`, never a dequantized kernel. Only the decoder's q/k/v/o/gate/up/down kernels
are quantized; the embedding, the output head, norms and biases stay in the parameter dtype, and
adapters stay float32 (docs/design.md §2: why, and what it costs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import ConfigError

QUANTIZATIONS = ("int8",)
LEAVES = ("kernel_q", "scale")  # a quantized projection's leaves, in place of "kernel"
INT8_MAX = 127                  # symmetric: -127..127, so -q is always representable


def check_quantize(value, field: str = "quantize") -> None:
    """None (float weights) or one of QUANTIZATIONS; anything else is refused listing them."""
    if value is not None and value not in QUANTIZATIONS:
        raise ConfigError(f"{field}={value!r} is not a supported quantization; expected one of "
                          f"{list(QUANTIZATIONS)} (or none for float weights)")


def int8_scales(kernel: np.ndarray) -> np.ndarray:
    """Per-column scales of a `[..., d_in, d_out]` kernel, float32 `[..., d_out]`: max |w| / 127 over
    `d_in` (1 for an all-zero column, which quantizes to zeros either way). A column with a NaN or an
    infinity gets a non-finite scale, which the loader refuses."""
    amax = np.abs(kernel.astype(np.float32, copy=False)).max(axis=-2)
    return np.where(amax == 0, 1.0, amax / INT8_MAX).astype(np.float32)


def to_int8(kernel: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The kernel's int8 values under `scales` (round to nearest even, within ±127)."""
    q = np.rint(kernel.astype(np.float32, copy=False) / scales[..., None, :])
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8)


def int8_dot(x: jax.Array, kernel_q: jax.Array, scale: jax.Array, dtype) -> jax.Array:
    """`x @ (kernel_q * scale)` as `(x @ kernel_q) * scale`: the int8 kernel is the operand (its
    values are exact in every compute dtype), accumulated in float32, scaled per output column."""
    y = jnp.dot(x.astype(dtype), kernel_q.astype(dtype), preferred_element_type=jnp.float32)
    return (y * scale.astype(jnp.float32)).astype(dtype)


def require_float(cfg, action: str) -> None:
    """Refuses `action` (which writes float kernels) on an int8 base: dequantized kernels are not the
    model's weights, so nothing is written from them."""
    if cfg.quantize is not None:
        raise ConfigError(f"{action} needs the base's float weights; this base is loaded with quantize="
                          f"{cfg.quantize!r}: load it without quantize")
