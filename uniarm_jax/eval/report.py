"""The outputs of an evaluation: `results.json`, `results.md` (tables), `samples/<method>.jsonl` and
the Pareto plots, from each method's generated and scored rows."""

from __future__ import annotations

import json
import os

import numpy as np

from uniarm_jax.eval.pareto import hypervolume, mean_inner_product, non_dominated

BASE = "base"  # the base model alone: always evaluated, the reference of every table and plot


def front_metrics(prefs: np.ndarray, means: np.ndarray, reference) -> dict:
    """HV, MIP and the non-dominated mask of one method's r̄(α) points (a single base point stands for
    every α in MIP)."""
    return {"hv": hypervolume(means, reference), "mip": mean_inner_product(prefs, np.broadcast_to(means, prefs.shape)),
            "non_dominated": non_dominated(means).tolist()}


def format_point(values) -> str:
    """(0.1234, 0.5678): a score vector as the tables print it."""
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def write_report(out_dir: str, objectives: list[str], prefs: np.ndarray, results: dict, reference, config: dict,
                 title: str = "") -> dict:
    """`results.json`, `results.md`, `samples/<method>.jsonl` and the Pareto plots from `results`
    (method -> run_method's output, with `base` among them). Returns what went into results.json."""
    from uniarm_jax.eval.plots import pareto_plots

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
    base_point = results[BASE]["means"][0] if BASE in results else None
    fronts = {n: {"prefs": prefs, "scores": r["means"]} for n, r in results.items() if n != BASE}
    plots = pareto_plots(fronts, objectives, out_dir, title=title, base=base_point) if fronts else []
    summary = {"objectives": objectives, "reference": [float(v) for v in reference], "prefs": prefs.tolist(),
               "methods": table, "plots": [os.path.basename(p) for p in plots], "config": config}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown_table(summary))
    return summary


def markdown_table(summary: dict) -> str:
    """The metrics table, then r̄(α) per method and α, then the plots."""
    objectives, methods = summary["objectives"], summary["methods"]
    lines = [f"Reference point {format_point(summary['reference'])} over ({', '.join(objectives)}); "
             f"{len(summary['prefs'])} preference vectors.", "",
             "| method | HV | MIP | non-dominated | mean tokens | generation s |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in methods.items():
        lines.append(f"| {name} | {m['hv']:.4f} | {m['mip']:.4f} | {sum(m['non_dominated'])}/{len(m['means'])} | "
                     f"{m['mean_tokens']:.1f} | {m['seconds']:.1f} |")
    if any("degenerate" in m for m in methods.values()):
        lines += ["", "Share of degenerate responses (scored as failures), over every α:", "",
                  "| method | degenerate |", "|---|---:|"]
        lines += [f"| {n} | {np.mean(m['degenerate']):.1%} |" for n, m in methods.items() if "degenerate" in m]
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
