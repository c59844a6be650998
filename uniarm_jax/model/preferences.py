"""Preference vectors α: validated at the API boundary, never inside a jitted function."""

from __future__ import annotations

import numpy as np

from uniarm_jax.errors import ConfigError

TOLERANCE = 1e-4


def check_pref(pref, num_objectives: int, batch: int | None = None) -> np.ndarray:
    """`pref` as float32 `[batch, k]`: each row non-negative and summing to 1 (within 1e-4).

    A single vector `[k]` is broadcast to `batch` rows. The error names the offending vector."""
    arr = np.asarray(pref, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
        if batch is not None:
            arr = np.repeat(arr, batch, axis=0)
    if arr.ndim != 2 or arr.shape[1] != num_objectives:
        raise ConfigError(f"preference vector(s) {np.asarray(pref).tolist()} must have {num_objectives} "
                          f"entries each (one per objective); got shape {arr.shape}")
    if batch is not None and arr.shape[0] != batch:
        raise ConfigError(f"{arr.shape[0]} preference vectors for a batch of {batch} rows; expected one per row")
    for row in arr:
        if not np.isfinite(row).all() or (row < 0).any():
            raise ConfigError(f"preference vector {row.tolist()} has a negative or non-finite entry; "
                              "expected non-negative weights")
        if abs(row.sum() - 1.0) > TOLERANCE:
            raise ConfigError(f"preference vector {row.tolist()} sums to {row.sum():.6g}; expected 1 "
                              f"(within {TOLERANCE})")
    return arr.astype(np.float32)


def parse_pref(text: str) -> list[float]:
    """'0.7,0.3' -> [0.7, 0.3]."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"preference {text!r} is not a comma-separated list of numbers, e.g. 0.7,0.3") from None
