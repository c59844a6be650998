"""Pareto plots: the files written (PNG, size, names), the drawn data against the inputs, the
filled/hollow split against `non_dominated`, and refused inputs."""

import json
import os

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.pareto import non_dominated, simplex_grid
from uniarm_jax.eval.plots import _draw, pareto_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def two_methods():
    prefs = simplex_grid(2, 4)
    return {"uniarm": {"prefs": prefs, "scores": np.array([[0, 4], [1, 3.5], [2, 3], [2.5, 1], [3, 0]])},
            "genarm": {"prefs": prefs, "scores": np.array([[0, 3], [1, 3.6], [1, 1], [2, 2], [2.5, 0]])}}


def drawn(fronts, i=0, j=1, base=None, annotate=False):
    ax = Figure().add_subplot()
    arrays = {n: (np.asarray(f["prefs"], float), np.asarray(f["scores"], float)) for n, f in fronts.items()}
    _draw(ax, arrays, i, j, ("x", "y"), None if base is None else np.asarray(base, float), annotate)
    return ax, {line.get_gid(): line.get_xydata() for line in ax.lines}


def test_two_objectives_write_one_png(tmp_path):
    paths = pareto_plots(two_methods(), ["helpful", "harmless"], str(tmp_path / "plots"), title="test",
                         base=np.array([1.0, 1.0]))
    assert paths == [str(tmp_path / "plots" / "pareto.png")]
    assert os.listdir(tmp_path / "plots") == ["pareto.png"]
    with open(paths[0], "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    assert matplotlib.image.imread(paths[0]).shape[:2] == (600, 720)  # 5 x 6 in at dpi 120


def test_three_objectives_write_the_pairwise_projections(tmp_path):
    prefs = simplex_grid(3, 2)
    scores = np.random.default_rng(0).uniform(0, 1, (len(prefs), 3))
    paths = pareto_plots({"uniarm": {"prefs": prefs, "scores": scores}}, ["helpful", "harmless", "humour"],
                         str(tmp_path), base=np.zeros(3))
    names = ["pareto_helpful_harmless.png", "pareto_helpful_humour.png", "pareto_harmless_humour.png"]
    assert paths == [str(tmp_path / n) for n in names]
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    for path in paths:
        assert matplotlib.image.imread(path).shape[:2] == (600, 720)


def test_drawn_data_equal_the_inputs():
    fronts = two_methods()
    ax, lines = drawn(fronts, base=[1.0, 1.5], annotate=True)
    for name, front in fronts.items():
        np.testing.assert_array_equal(lines[name], front["scores"])   # the curve, in grid order
        assert lines[name].shape == (5, 2)
    np.testing.assert_array_equal(lines["base"], [[1.0, 1.5]])
    assert [t.get_text() for t in ax.texts] == ["0", "0.25", "0.5", "0.75", "1"] * 2   # α[0] per point
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["uniarm", "genarm", "base"]


def test_filled_points_are_the_non_dominated_ones():
    scores = np.array([[0, 3], [1, 3.6], [1, 1], [2, 2], [2.5, 0]])
    ax, lines = drawn({"m": {"prefs": simplex_grid(2, 4), "scores": scores}})
    assert non_dominated(scores).tolist() == [False, True, False, True, True]
    np.testing.assert_array_equal(lines["m:non-dominated"], scores[[1, 3, 4]])
    curve = next(line for line in ax.lines if line.get_gid() == "m")
    assert curve.get_markerfacecolor() == "none"                      # the rest stay hollow


def test_projection_uses_its_own_pair():
    scores = np.array([[3, 0, 0], [0, 1, 2], [0, 2, 1]])    # all non-dominated in 3-D; the first is not in (1, 2)
    _, lines = drawn({"m": {"prefs": np.full((3, 3), 1 / 3), "scores": scores}}, i=1, j=2)
    np.testing.assert_array_equal(lines["m"], scores[:, 1:])
    np.testing.assert_array_equal(lines["m:non-dominated"], scores[1:, 1:])


@pytest.mark.parametrize("fronts, objectives, base, message", [
    ({"m": {"prefs": np.full((2, 4), 0.25), "scores": np.zeros((2, 4))}}, list("abcd"), None,
     r"2 or 3 objectives; got 4"),
    (two_methods(), ["a", "b", "c"], None, r"scores of shape \(5, 2\) do not match \[M >= 1, 3\]"),
    ({"m": {"prefs": np.full((3, 2), 0.5), "scores": np.zeros((4, 2))}}, ["a", "b"], None,
     r"prefs of shape \(3, 2\) and scores of shape \(4, 2\) do not match"),
    ({}, ["a", "b"], None, r"no fronts to plot"),
    ({"m": {"scores": np.zeros((2, 2))}}, ["a", "b"], None, r"'prefs' and 'scores'"),
    (two_methods(), ["a", "a"], None, r"distinct"),
    (two_methods(), ["a", "b"], np.zeros(3), r"base point must be 2 finite numbers; got shape \(3,\)"),
])
def test_refused_inputs(tmp_path, fronts, objectives, base, message):
    with pytest.raises(ConfigError, match=message):
        pareto_plots(fronts, objectives, str(tmp_path), base=base)
    assert os.listdir(tmp_path) == []


def test_dev_curves_are_the_mean_dev_accuracy_and_the_relative_dev_loss_by_step(tmp_path):
    from uniarm_jax.eval.plots import dev_curves

    rows = [{"step": 0, "split": "dev", "accuracy/a": 0.5, "accuracy/b": 0.4, "loss": 0.7},
            {"step": 10, "split": "train", "accuracy/a": 0.9, "accuracy/b": 0.9},        # train rows are left out
            {"step": 10, "split": "dev", "accuracy/a": 0.7, "accuracy/b": 0.5, "loss": 0.56},
            {"step": 20, "split": "dev", "accuracy/a": 0.75, "accuracy/b": 0.65, "loss": 0.35},
            {"step": 10, "split": "dev", "accuracy/a": 0.7, "accuracy/b": 0.5, "loss": 0.56}]  # logged again on resume
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    curves = dev_curves({"uniarm": (str(path), None), "genarm_b": (str(path), ["b"])}, str(tmp_path / "curves.png"))
    np.testing.assert_allclose(curves["uniarm"], [[0, 0.45, 1.0], [10, 0.6, 0.8], [20, 0.7, 0.5]], rtol=1e-12)
    np.testing.assert_allclose(curves["genarm_b"][:, :2], [[0, 0.4], [10, 0.5], [20, 0.65]])  # its own objective
    assert matplotlib.image.imread(tmp_path / "curves.png").shape[:2] == (600, 1440)
    (tmp_path / "empty.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 1.0}) + "\n")
    with pytest.raises(ConfigError, match="holds no dev accuracy"):
        dev_curves({"x": (str(tmp_path / "empty.jsonl"), None)}, str(tmp_path / "x.png"))


def test_interval_plot_draws_each_value_with_its_interval(tmp_path):
    from uniarm_jax.eval.plots import interval_plot

    ci = lambda v: {"value": v, "low": v - 0.1, "high": v + 0.2}  # noqa: E731
    methods = {"base": {"hv": 0.3, "hv_ci": ci(0.3), "mip": 0.4, "mip_ci": ci(0.4)},
               "uniarm": {"hv": 0.5, "hv_ci": ci(0.5), "mip": 0.6, "mip_ci": ci(0.6)}}
    differences = [{"a": "uniarm", "b": "base", "hv": ci(0.2), "mip": ci(0.2)}]
    panels = interval_plot(methods, differences, str(tmp_path / "intervals.png"))
    assert panels["HV"] == [("base", 0.3, 0.3 - 0.1, 0.3 + 0.2), ("uniarm", 0.5, 0.5 - 0.1, 0.5 + 0.2)]
    assert panels["ΔMIP"] == [("uniarm − base", 0.2, 0.2 - 0.1, 0.2 + 0.2)]
    assert list(panels) == ["HV", "MIP", "ΔHV", "ΔMIP"]
    assert (tmp_path / "intervals.png").read_bytes()[:8] == PNG_SIGNATURE
    assert set(interval_plot(methods, [], str(tmp_path / "two.png"))) == {"HV", "MIP"}
    with pytest.raises(ConfigError, match="no intervals to plot"):
        interval_plot({"base": {"hv": 0.3, "mip": 0.4}}, [], str(tmp_path / "none.png"))
