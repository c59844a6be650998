"""Pareto-front plots as PNG files, so a reader can see what the hypervolume and MIP numbers
summarise: where each method's points lie, which of them are non-dominated, and which preference
vector α produced which point. Two objectives give one plot; three give the three pairwise
projections. Figures are drawn on matplotlib's Agg canvas, without pyplot's global state, so
plotting works on headless machines and inside tests.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.pareto import non_dominated

FIGSIZE = (6, 5)
DPI = 120


def _check(fronts: dict[str, dict], objectives: list[str], base) -> tuple[dict, np.ndarray | None]:
    """The fronts as float arrays, after checking every shape against `objectives`."""
    k = len(objectives)
    if k not in (2, 3):
        raise ConfigError(f"Pareto plots are drawn for 2 or 3 objectives; got {k}: {list(objectives)}")
    if len(set(objectives)) != k:
        raise ConfigError(f"objective names must be distinct; got {list(objectives)}")
    if not fronts:
        raise ConfigError("no fronts to plot: expected at least one method -> {'prefs', 'scores'}")
    arrays = {}
    for name, front in fronts.items():
        if not isinstance(front, dict) or not {"prefs", "scores"} <= front.keys():
            raise ConfigError(f"front {name!r} must be a dict with 'prefs' and 'scores'")
        prefs, scores = np.asarray(front["prefs"], np.float64), np.asarray(front["scores"], np.float64)
        if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] != k:
            raise ConfigError(f"front {name!r}: scores of shape {scores.shape} do not match "
                              f"[M >= 1, {k}] for the objectives {list(objectives)}")
        if prefs.shape != scores.shape:
            raise ConfigError(f"front {name!r}: prefs of shape {prefs.shape} and scores of shape "
                              f"{scores.shape} do not match")
        if not np.isfinite(scores).all():
            raise ConfigError(f"front {name!r}: scores must be finite")
        arrays[name] = (prefs, scores)
    if base is not None:
        base = np.asarray(base, np.float64)
        if base.shape != (k,) or not np.isfinite(base).all():
            raise ConfigError(f"the base point must be {k} finite numbers; got shape {base.shape}")
    return arrays, base


def _draw(ax: Axes, fronts: dict[str, tuple[np.ndarray, np.ndarray]], i: int, j: int, labels: tuple[str, str],
          base: np.ndarray | None = None, annotate: bool = False, title: str = "") -> None:
    """Objectives i (x) and j (y) on `ax`: per method a curve in grid order with hollow markers
    (gid = method name), then its non-dominated points refilled (gid = "<method>:non-dominated");
    the base point as a black star (gid = "base"); with `annotate`, each point's α[0]."""
    for name, (prefs, scores) in fronts.items():
        xy = scores[:, [i, j]]
        curve, = ax.plot(xy[:, 0], xy[:, 1], "-o", mfc="none", label=name, gid=name)
        nd = non_dominated(xy)
        ax.plot(xy[nd, 0], xy[nd, 1], "o", color=curve.get_color(), linestyle="none",
                gid=f"{name}:non-dominated")
        if annotate:
            for alpha, (x, y) in zip(prefs[:, 0], xy):
                ax.annotate(f"{alpha:g}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    if base is not None:
        ax.plot([base[i]], [base[j]], "*", color="black", markersize=12, linestyle="none", label="base", gid="base")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def pareto_plots(fronts: dict[str, dict], objectives: list[str], out_dir: str, title: str = "",
                 base: np.ndarray | None = None) -> list[str]:
    """Write the Pareto plots of `fronts` (method -> {"prefs": [M, k], "scores": [M, k]}, the mean
    score vector per grid point α in grid order) to `out_dir`: pareto.png for k = 2, or
    pareto_<a>_<b>.png for each pair of the k = 3 objectives. `base` ([k]) is the base model's point.
    Filled markers are each method's non-dominated points (in the plotted pair). Returns the paths."""
    arrays, base = _check(fronts, objectives, base)
    k = len(objectives)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, j in itertools.combinations(range(k), 2):
        fname = "pareto.png" if k == 2 else f"pareto_{objectives[i]}_{objectives[j]}.png"
        fig = Figure(figsize=FIGSIZE, dpi=DPI)
        _draw(fig.add_subplot(), arrays, i, j, (objectives[i], objectives[j]), base, annotate=k == 2, title=title)
        fig.tight_layout()
        path = os.path.join(out_dir, fname)
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths


def dev_curves(runs: dict[str, tuple[str, list | None]], out_path: str, title: str = "") -> dict[str, np.ndarray]:
    """Dev implied-reward accuracy and dev loss against the training step, one curve per run (name -> its
    `metrics.jsonl` and the objectives it learns, None: all). The accuracy is the mean of those
    `accuracy/<objective>` entries at each dev evaluation (a GenARM ARM is read on its own objective);
    the loss is the whole training objective, as a fraction of its value at the first evaluation, since
    each method's loss has its own scale. With 80-odd dev pairs the accuracy moves in steps of ~0.01
    and is noisy; the loss shows where training stopped improving. Returns the plotted
    `[evaluations, 3]` arrays (step, accuracy, relative loss)."""
    curves = {}
    for name, (path, objectives) in runs.items():
        rows = []
        for line in open(path):
            row = json.loads(line)
            accuracies = [v for k, v in row.items() if k.startswith("accuracy/")
                          and (objectives is None or k.removeprefix("accuracy/") in objectives)]
            if row.get("split") == "dev" and accuracies:
                rows.append((row["step"], (float(np.mean(accuracies)), float(row.get("loss", np.nan)))))
        if not rows:
            raise ConfigError(f"{path} holds no dev accuracy; expected the metrics.jsonl of a `uniarm train` run")
        xy = np.array([(step, *v) for step, v in sorted(dict(rows).items())], np.float64)  # a resume logs again
        xy[:, 2] /= xy[0, 2]
        curves[name] = xy
    fig = Figure(figsize=(2 * FIGSIZE[0], FIGSIZE[1]), dpi=DPI)
    accuracy, loss = fig.subplots(1, 2)
    for name, xy in curves.items():
        accuracy.plot(xy[:, 0], xy[:, 1], "-o", markersize=3, label=name, gid=name)
        loss.plot(xy[:, 0], xy[:, 2], "-o", markersize=3, label=name, gid=f"{name}/loss")
    accuracy.set_ylabel("dev implied-reward accuracy (mean over objectives)")
    loss.set_ylabel("dev loss / its value at the first evaluation")
    for ax in (accuracy, loss):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    accuracy.legend(fontsize="small")
    fig.suptitle(title)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path)
    return curves


def interval_plot(methods: dict[str, dict], differences: list[dict], out_path: str, title: str = "") -> dict:
    """HV and MIP of every method with their 95% bootstrap intervals (results.json's `hv_ci`/`mip_ci`),
    and beside them the paired differences a − b with theirs (a zero line: an interval that crosses it
    does not separate the two methods), so a reader sees which gaps the prompts support. Returns the
    drawn panels: name -> [(label, value, low, high), ...]."""
    panels = {metric.upper(): [(name, m[metric], m[f"{metric}_ci"]["low"], m[f"{metric}_ci"]["high"])
                               for name, m in methods.items() if f"{metric}_ci" in m] for metric in ("hv", "mip")}
    for metric in ("hv", "mip"):
        if differences:
            panels[f"Δ{metric.upper()}"] = [(f"{d['a']} − {d['b']}", d[metric]["value"], d[metric]["low"],
                                             d[metric]["high"]) for d in differences]
    if not any(panels.values()):
        raise ConfigError("no intervals to plot: expected methods with 'hv_ci' and 'mip_ci' (bootstrap > 0)")
    fig = Figure(figsize=(6 * len(panels) // 2, 2 + 0.35 * max(map(len, panels.values())) * 2), dpi=DPI)
    for i, (name, rows) in enumerate(panels.items()):
        ax = fig.add_subplot(2, len(panels) // 2, i + 1)
        y = np.arange(len(rows))[::-1]
        value, low, high = (np.array([r[j] for r in rows], np.float64) for j in (1, 2, 3))
        ax.errorbar(value, y, xerr=[value - low, high - value], fmt="o", capsize=3, gid=name)
        if name.startswith("Δ"):
            ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(y, [r[0] for r in rows], fontsize="small")
        ax.set_title(f"{title}: {name}" if title else name, fontsize="small")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path)
    return panels
