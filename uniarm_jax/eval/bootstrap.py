"""95% bootstrap confidence intervals over prompts for front metrics (HV, MIP), and for the paired
difference of two methods.

A method's front is r̄(α), the mean over the P test prompts of each α's scores, so the prompts are the
sampling unit: a bootstrap replicate draws P prompt indices with replacement, recomputes every α's
mean over them and the metric of that front. The interval is the percentile interval of the
replicates. A paired difference resamples the same prompts for both methods in each replicate, so the
prompt-to-prompt variation both share cancels.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.pareto import hypervolume, mean_inner_product

Metric = Callable[[np.ndarray], float]  # r̄(α) [M, k] -> a number


def front_metric(name: str, prefs, reference=None) -> Metric:
    """`"hv"` (hypervolume above `reference`) or `"mip"` (mean inner product with `prefs`) of a front
    `[M, k]`; a single point (the base) stands for every α in MIP."""
    prefs = np.asarray(prefs, np.float64)
    if name == "hv":
        if reference is None:
            raise ConfigError("the hypervolume needs a reference point")
        return lambda means: hypervolume(means, reference)
    if name == "mip":
        return lambda means: mean_inner_product(prefs, np.broadcast_to(means, prefs.shape))
    raise ConfigError(f"front metric {name!r} is not 'hv' or 'mip'")


def _check(scores) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if s.ndim != 3 or s.shape[1] < 2:
        raise ConfigError(f"scores of shape {s.shape}; expected [preferences, prompts >= 2, objectives]")
    return s


def resample_indices(num_prompts: int, num_resamples: int, seed: int) -> np.ndarray:
    """`[num_resamples, num_prompts]` prompt indices drawn with replacement (numpy's default_rng)."""
    if num_resamples < 1:
        raise ConfigError(f"num_resamples={num_resamples}; expected at least 1")
    return np.random.default_rng(seed).integers(0, num_prompts, size=(num_resamples, num_prompts))


def _interval(point: float, values: np.ndarray, level: float) -> dict:
    if not 0 < level < 1:
        raise ConfigError(f"confidence level {level}; expected a number in (0, 1)")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return {"value": float(point), "low": float(low), "high": float(high), "level": level,
            "resamples": int(values.size)}


def bootstrap_metric(scores, metric: Metric, num_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The metric of the front of `scores` `[M, P, k]` (M preference vectors, P prompts) and its
    percentile interval over prompt resamples: `{value, low, high, level, resamples}`."""
    s = _check(scores)
    idx = resample_indices(s.shape[1], num_resamples, seed)
    values = np.array([metric(s[:, i].mean(axis=1)) for i in idx])
    return _interval(metric(s.mean(axis=1)), values, level)


def paired_difference(scores_a, scores_b, metric: Metric, num_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """metric(a) − metric(b) and its interval, both fronts recomputed on the same resampled prompts
    (`scores_*` `[M, P, k]`, the same P prompts in the same order; M may differ, e.g. the base's 1)."""
    a, b = _check(scores_a), _check(scores_b)
    if a.shape[1:] != b.shape[1:]:
        raise ConfigError(f"paired scores of shapes {a.shape} and {b.shape}; expected the same prompts and objectives")
    idx = resample_indices(a.shape[1], num_resamples, seed)
    values = np.array([metric(a[:, i].mean(axis=1)) - metric(b[:, i].mean(axis=1)) for i in idx])
    return _interval(metric(a.mean(axis=1)) - metric(b.mean(axis=1)), values, level)
