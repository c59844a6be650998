"""Pareto-front metrics (docs/methods.md §4): preference grids, the non-dominated set, exact hypervolume
for 2 and 3 objectives, and the mean inner product. Every objective is maximised (harmlessness
enters as −cost), and one recorded reference point serves every method of an experiment.
"""

from __future__ import annotations

import itertools

import numpy as np

from uniarm_jax.errors import ConfigError
from uniarm_jax.model.preferences import check_pref


def simplex_grid(k: int, steps: int = 10) -> np.ndarray:
    """Every α with entries in {0, 1/steps, ..., 1} summing to 1; k=2, steps=10: (0,1), (0.1,0.9), …, (1,0)."""
    if k < 1 or steps < 1:
        raise ConfigError(f"a preference grid needs k >= 1 and steps >= 1; got k={k}, steps={steps}")
    points = [c for c in itertools.product(range(steps + 1), repeat=k) if sum(c) == steps]
    return np.array(sorted(points), np.float64) / steps


def non_dominated(points) -> np.ndarray:
    """Boolean mask of the points no other point dominates (≥ everywhere, > somewhere)."""
    p = np.asarray(points, np.float64)
    mask = np.ones(len(p), bool)
    for i in range(len(p)):
        others = np.delete(p, i, axis=0)
        mask[i] = not np.any(np.all(others >= p[i], axis=1) & np.any(others > p[i], axis=1))
    return mask


def check_reference(points, reference) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(points, np.float64), np.asarray(reference, np.float64)
    if p.ndim != 2 or r.shape != (p.shape[1],):
        raise ConfigError(f"points of shape {p.shape} and a reference point of shape {r.shape} do not match")
    if not np.isfinite(p).all() or not np.isfinite(r).all():
        raise ConfigError("points and the reference point must be finite")
    for point in p:
        if not np.all(point >= r):
            raise ConfigError(f"the reference point {r.tolist()} is not dominated by the point {point.tolist()}; "
                              "choose a reference point below every point in every objective")
    return p, r


def _hv2(p: np.ndarray, r: np.ndarray) -> float:
    order = np.argsort(-p[:, 0], kind="stable")
    xs, ys = p[order, 0], p[order, 1]
    area, best_y = 0.0, r[1]
    for i in range(len(xs)):
        best_y = max(best_y, ys[i])
        next_x = xs[i + 1] if i + 1 < len(xs) else r[0]
        area += (xs[i] - next_x) * (best_y - r[1])
    return float(area)


def hypervolume(points, reference) -> float:
    """Exact hypervolume of the region dominated by `points` and bounded below by `reference`
    (k = 1, 2 or 3; dominated points add nothing, so they may be passed)."""
    p, r = check_reference(points, reference)
    if len(p) == 0:
        return 0.0
    k = p.shape[1]
    if k == 1:
        return float(p[:, 0].max() - r[0])
    if k == 2:
        return _hv2(p, r)
    if k == 3:
        order = np.argsort(-p[:, 2], kind="stable")
        volume = 0.0
        for i in range(len(order)):
            next_z = p[order[i + 1], 2] if i + 1 < len(order) else r[2]
            volume += (p[order[i], 2] - next_z) * _hv2(p[order[: i + 1], :2], r[:2])
        return float(volume)
    raise ConfigError(f"exact hypervolume is implemented for 1 to 3 objectives; got {k}")


def mean_inner_product(prefs, scores) -> float:
    """MIP = (1/M) Σ_α ⟨α, r̄(α)⟩ over the M grid points (`prefs` and `scores` `[M, k]`)."""
    a, s = np.asarray(prefs, np.float64), np.asarray(scores, np.float64)
    if a.shape != s.shape:
        raise ConfigError(f"{a.shape[0]} preference vectors and scores of shape {s.shape} do not match")
    check_pref(a, a.shape[1])
    return float(np.mean(np.sum(a * s, axis=1)))
