"""Bootstrap intervals against a direct numpy resample loop (same seed, same draws), and the
hypervolume against moocore on random fronts for k = 2 and 3."""

import moocore
import numpy as np
import pytest

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.bootstrap import bootstrap_metric, front_metric, paired_difference
from uniarm_jax.eval.pareto import hypervolume, simplex_grid


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_matches_moocore(k, seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, (int(rng.integers(1, 30)), k))
    reference = np.full(k, -0.1)
    assert hypervolume(points, reference) == pytest.approx(moocore.hypervolume(points, ref=reference, maximise=True),
                                                           rel=1e-12, abs=1e-15)


def scores_for(seed, m, p=20, k=2):
    return np.random.default_rng(seed).uniform(0.1, 1, (m, p, k))


@pytest.mark.parametrize("name", ["hv", "mip"])
def test_bootstrap_is_a_numpy_resample_loop(name):
    prefs = simplex_grid(2, 4)
    scores = scores_for(0, len(prefs))
    got = bootstrap_metric(scores, front_metric(name, prefs, [0.0, 0.0]), num_resamples=200, seed=3)

    def oracle(means):  # written out independently: moocore's HV, MIP as a numpy sum
        if name == "hv":
            return moocore.hypervolume(means, ref=[0.0, 0.0], maximise=True)
        return np.mean(np.sum(prefs * means, axis=1))

    rng = np.random.default_rng(3)
    values = []
    for _ in range(200):
        idx = rng.integers(0, scores.shape[1], size=scores.shape[1])
        values.append(oracle(scores[:, idx].mean(axis=1)))
    assert got["value"] == pytest.approx(oracle(scores.mean(axis=1)), rel=1e-12)
    assert [got["low"], got["high"]] == pytest.approx(np.percentile(values, [2.5, 97.5]), rel=1e-12)
    assert got["low"] < got["value"] < got["high"] and got["resamples"] == 200


def test_paired_difference_resamples_the_same_prompts():
    prefs = simplex_grid(2, 4)
    a = scores_for(1, len(prefs))
    b = a - 0.05 + 0.01 * scores_for(2, len(prefs))  # b is a shifted copy: the shared variation cancels
    mip = front_metric("mip", prefs)
    diff = paired_difference(a, b, mip, num_resamples=300, seed=5)
    rng = np.random.default_rng(5)
    values = []
    for _ in range(300):
        idx = rng.integers(0, a.shape[1], size=a.shape[1])
        values.append(mip(a[:, idx].mean(axis=1)) - mip(b[:, idx].mean(axis=1)))
    assert [diff["low"], diff["high"]] == pytest.approx(np.percentile(values, [2.5, 97.5]), rel=1e-12)
    assert diff["value"] == pytest.approx(mip(a.mean(axis=1)) - mip(b.mean(axis=1)), rel=1e-12)
    unpaired = bootstrap_metric(a, mip, 300, seed=5)
    assert diff["high"] - diff["low"] < 0.2 * (unpaired["high"] - unpaired["low"])
    base = a[:1]  # the base: one point, the same prompts
    assert paired_difference(a, base, mip, 50)["resamples"] == 50


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="expected \\[preferences, prompts >= 2, objectives\\]"):
        bootstrap_metric(np.zeros((3, 4)), front_metric("mip", simplex_grid(2, 2)))
    with pytest.raises(ConfigError, match="expected the same prompts"):
        paired_difference(scores_for(0, 3), scores_for(0, 3, p=10), front_metric("mip", simplex_grid(2, 2)))
    with pytest.raises(ConfigError, match="is not 'hv' or 'mip'"):
        front_metric("igd", simplex_grid(2, 2))
    with pytest.raises(ConfigError, match="needs a reference point"):
        front_metric("hv", simplex_grid(2, 2))
