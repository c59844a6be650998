"""Pareto metrics against oracles: hypervolume against a brute-force count of grid cells and
hand-made cases; MIP by hand; grids; the non-dominated set; refused inputs."""

import itertools

import numpy as np
import pytest

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.pareto import hypervolume, mean_inner_product, non_dominated, simplex_grid


def brute_force_hv(points, reference):
    """Exact by cells: the coordinates of all points cut space into boxes; sum the dominated ones."""
    p, r = np.asarray(points, float), np.asarray(reference, float)
    axes = [np.unique(np.concatenate([[r[d]], p[:, d]])) for d in range(p.shape[1])]
    volume = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        upper = np.array([axes[d][i + 1] for d, i in enumerate(cell)])
        if np.any(np.all(p >= upper, axis=1)):
            volume += np.prod([axes[d][i + 1] - axes[d][i] for d, i in enumerate(cell)])
    return volume


@pytest.mark.parametrize("k, n", [(2, 1), (2, 7), (2, 15), (3, 1), (3, 6), (3, 12)])
def test_hypervolume_equals_brute_force(k, n):
    rng = np.random.default_rng(k * 100 + n)
    for _ in range(5):
        points = rng.uniform(0, 1, (n, k))
        reference = np.full(k, -0.1)
        assert hypervolume(points, reference) == pytest.approx(brute_force_hv(points, reference), rel=1e-12)


def test_hypervolume_by_hand():
    assert hypervolume([[1, 1]], [0, 0]) == 1
    assert hypervolume([[2, 1], [1, 2]], [0, 0]) == 3           # two 2x1 boxes overlapping in 1x1
    assert hypervolume([[2, 1], [1, 2], [1, 1]], [0, 0]) == 3   # a dominated point adds nothing
    assert hypervolume([[1, 1, 1]], [0, 0, 0]) == 1
    assert hypervolume([[2, 1, 1], [1, 2, 1], [1, 1, 2]], [0, 0, 0]) == 4  # 3 unit boxes beyond a shared cube


def test_mip_by_hand_and_grids():
    prefs = [[1, 0], [0.5, 0.5], [0, 1]]
    scores = [[2, 0], [1, 3], [0, 4]]
    assert mean_inner_product(prefs, scores) == pytest.approx((2 + 2 + 4) / 3)
    grid = simplex_grid(2)
    assert len(grid) == 11 and grid[0].tolist() == [0, 1] and grid[-1].tolist() == [1, 0]
    assert np.allclose(grid[3], [0.3, 0.7])
    assert len(simplex_grid(3, 4)) == 15 and np.allclose(simplex_grid(3, 4).sum(1), 1)


def test_non_dominated_set():
    points = [[1, 3], [2, 2], [3, 1], [1, 1], [2, 2]]
    assert non_dominated(points).tolist() == [True, True, True, False, True]


def test_refused_inputs():
    with pytest.raises(ConfigError, match=r"reference point \[0.5, 0.0\] is not dominated by the point \[0.2, 1.0\]"):
        hypervolume([[1, 1], [0.2, 1]], [0.5, 0])
    with pytest.raises(ConfigError, match=r"preference vector \[0.5, 0.6\] sums to 1.1"):
        mean_inner_product([[0.5, 0.6]], [[1, 1]])
    with pytest.raises(ConfigError, match="exact hypervolume is implemented for 1 to 3 objectives"):
        hypervolume([[1, 1, 1, 1]], [0, 0, 0, 0])
