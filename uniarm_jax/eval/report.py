"""The outputs of an evaluation: `results.json`, `results.md` (tables), `samples/<method>.jsonl` and
the Pareto plots, from each method's generated and scored rows: HV and MIP with 95% bootstrap
intervals over prompts (`bootstrap.py`), the paired differences asked for, the share of degenerate
responses and how many distinct responses a prompt gets across α."""

from __future__ import annotations

import json
import os

import numpy as np

from uniarm_jax.eval.bootstrap import bootstrap_metric, front_metric, paired_difference
from uniarm_jax.eval.pareto import non_dominated

BASE = "base"  # the base model alone: always evaluated, the reference of every table and plot


def front_metrics(prefs: np.ndarray, means: np.ndarray, reference) -> dict:
    """HV, MIP and the non-dominated mask of one method's r̄(α) points (a single base point stands for
    every α in MIP)."""
    return {name: front_metric(name, prefs, reference)(means) for name in ("hv", "mip")} | {
        "non_dominated": non_dominated(means).tolist()}


def format_point(values) -> str:
    """(0.1234, 0.5678): a score vector as the tables print it."""
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def distinct_per_prompt(samples: list[dict]) -> dict[str, int]:
    """How many different texts each prompt got across the α grid (prompts in first-seen order)."""
    texts: dict[str, set] = {}
    for row in samples:
        texts.setdefault(row["prompt"], set()).add(row["text"])
    return {prompt: len(t) for prompt, t in texts.items()}


def distinct_responses(samples: list[dict]) -> float:
    """The mean over prompts of `distinct_per_prompt`."""
    return float(np.mean(list(distinct_per_prompt(samples).values())))


def intervals(prefs: np.ndarray, results: dict, reference, compare, resamples: int) -> tuple[dict, list]:
    """HV and MIP intervals per method, and `compare`'s paired differences (a − b on the same
    resampled prompts), from each method's scores `[M, P, k]` (rows are α-major)."""
    metrics = {name: front_metric(name, prefs, reference) for name in ("hv", "mip")}
    scores = {n: r["scores"].reshape(len(r["means"]), -1, r["scores"].shape[-1]) for n, r in results.items()}
    per_method = {n: {f"{m}_ci": bootstrap_metric(s, f, resamples) for m, f in metrics.items()}
                  for n, s in scores.items()}
    pairs = [{"a": a, "b": b} | {m: paired_difference(scores[a], scores[b], f, resamples) for m, f in metrics.items()}
             for a, b in compare]
    return per_method, pairs


def write_report(out_dir: str, objectives: list[str], prefs: np.ndarray, results: dict, reference, config: dict,
                 title: str = "", compare=(), resamples: int = 1000) -> dict:
    """`results.json`, `results.md`, `samples/<method>.jsonl` and the Pareto plots from `results`
    (method -> run_method's output, with `base` among them); intervals from `resamples` bootstrap
    replicates (0: none), paired differences for each `(a, b)` in `compare`. Returns what went into
    results.json."""
    from uniarm_jax.eval.plots import interval_plot, pareto_plots

    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    for name, res in results.items():  # first, so that a refused reference point loses no generation
        with open(os.path.join(out_dir, "samples", f"{name}.jsonl"), "w") as f:
            for row in res["samples"]:
                f.write(json.dumps(row) + "\n")
    table = {}
    for name, res in results.items():
        table[name] = front_metrics(prefs, res["means"], reference) | {
            "means": res["means"].tolist(), "mean_tokens": res["mean_tokens"], "seconds": res["seconds"],
            "rows": len(res["samples"])}
        if "degenerate" in res:
            table[name]["degenerate"] = res["degenerate"].tolist()
        if name != BASE:
            table[name]["distinct_responses"] = distinct_responses(res["samples"])
    differences = []
    if resamples:
        per_method, differences = intervals(prefs, results, reference, compare, resamples)
        for name, cis in per_method.items():
            table[name].update(cis)
    base_point = results[BASE]["means"][0] if BASE in results else None
    fronts = {n: {"prefs": prefs, "scores": r["means"]} for n, r in results.items() if n != BASE}
    plots = pareto_plots(fronts, objectives, out_dir, title=title, base=base_point) if fronts else []
    if resamples:
        plots.append(os.path.join(out_dir, "intervals.png"))
        interval_plot(table, differences, plots[-1], title)
    summary = {"objectives": objectives, "reference": [float(v) for v in reference], "prefs": prefs.tolist(),
               "methods": table, "differences": differences, "plots": [os.path.basename(p) for p in plots],
               "config": config}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown_table(summary))
    return summary


def _with_ci(value: float, ci: dict | None) -> str:
    return f"{value:.4f}" if ci is None else f"{value:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"


def markdown_table(summary: dict) -> str:
    """The metrics table, then r̄(α) per method and α, then the plots."""
    objectives, methods = summary["objectives"], summary["methods"]
    lines = [f"Reference point {format_point(summary['reference'])} over ({', '.join(objectives)}); "
             f"{len(summary['prefs'])} preference vectors. Intervals: 95% bootstrap over prompts.", "",
             "| method | HV | MIP | non-dominated | degenerate | distinct / prompt | mean tokens | generation s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in methods.items():
        degenerate = f"{np.mean(m['degenerate']):.1%}" if "degenerate" in m else "–"
        distinct = f"{m['distinct_responses']:.2f}" if "distinct_responses" in m else "–"
        lines.append(f"| {name} | {_with_ci(m['hv'], m.get('hv_ci'))} | {_with_ci(m['mip'], m.get('mip_ci'))} | "
                     f"{sum(m['non_dominated'])}/{len(m['means'])} | {degenerate} | {distinct} | "
                     f"{m['mean_tokens']:.1f} | {m['seconds']:.1f} |")
    if summary.get("differences"):
        lines += ["", "Paired differences (the same resampled prompts for both methods):", "",
                  "| a − b | ΔHV | ΔMIP |", "|---|---:|---:|"]
        lines += [f"| {d['a']} − {d['b']} | {_with_ci(d['hv']['value'], d['hv'])} | "
                  f"{_with_ci(d['mip']['value'], d['mip'])} |" for d in summary["differences"]]
    if any("degenerate" in m for m in methods.values()):
        lines += ["", "Degenerate responses (run-on repetition, near-empty, never ended) score as failures on every "
                  "objective; the share is over every α."]
    guided = [n for n in methods if n != BASE]
    if guided:
        lines += ["", f"Mean scores r̄(α) = ({', '.join(objectives)}) per preference vector α:", "",
                  "| α | " + " | ".join(guided) + " |", "|---|" + "---|" * len(guided)]
        for i, alpha in enumerate(summary["prefs"]):
            lines.append(f"| {', '.join(f'{a:g}' for a in alpha)} | "
                         + " | ".join(format_point(methods[n]["means"][i]) for n in guided) + " |")
    if summary["plots"]:
        lines += [""] + [f"![{p}]({p})" for p in summary["plots"]]
    return "\n".join(lines) + "\n"
