"""`uniarm evaluate`: generate → score → metrics → plots for several methods over one preference grid.

The papers judge a method by the Pareto front of its generations (METHODS.md §4): for every α of a
grid, guided generation on the test prompts, every response scored by one reward per objective, and
`r̄(α)` the mean score vector. Every method runs as ONE batched sampling call over all (α, prompt)
rows (or fixed-size chunks of them, `batch_size`, when memory asks for it), so a grid costs one
compilation. The base model alone is always evaluated too, once (α does not reach it): its point is
the reference every method is read against.

Outputs in `out_dir`: `samples/<method>.jsonl` (every response with its α and scores),
`results.json` (the configuration, the grid, the reference point, r̄(α), HV, MIP and the
non-dominated points per method), `results.md` (the same as tables) and the Pareto plots.

A config is YAML (keys below, `EVAL_DEFAULTS`), with `key=value` overrides on the command line:

    base: ~/.cache/uniarm_jax/SmolLM2-135M-Instruct
    prompts: data/small_task/test.jsonl       # JSON lines with a "prompt" field
    objectives: [brevity, informativeness]    # built-in names or scorer dicts (see scoring.py)
    reference: [0.0, 0.0]                     # the HV reference point: every point must dominate it
    methods:
      genarm: {arms: [runs/genarm_brevity/adapter, runs/genarm_informativeness/adapter]}
      uniarm: {arms: [runs/uniarm/adapter]}
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import yaml

from uniarm_jax.decode import Sampler, generate_in_chunks, num_objectives
from uniarm_jax.errors import ConfigError
from uniarm_jax.pareto import check_reference, hypervolume, mean_inner_product, non_dominated, simplex_grid
from uniarm_jax.preferences import check_pref
from uniarm_jax.scoring import score_responses
from uniarm_jax.tokenization import encode_prompts

EVAL_DEFAULTS = {
    "base": None,             # Hugging Face directory of the frozen base
    "prompts": None,          # JSON lines with a "prompt" field (e.g. make-data's test.jsonl)
    "limit": None,            # use only the first N prompts
    "objectives": None,       # one scorer per objective, in the ARMs' order
    "reference": None,        # HV reference point [k], recorded with the results
    "grid_steps": 10,         # the simplex grid: entries in {0, 1/steps, ..., 1}; k=2, 10 -> 11 points
    "prefs": None,            # or an explicit list of preference vectors
    "methods": {},            # name -> {arms: [dirs], arm_weights: [w], base_weight: 1.0}
    "template": "chat",
    "max_new_tokens": 48,
    "max_prompt_tokens": 512,
    "temperature": 0.0,
    "top_k": 0,
    "top_p": 1.0,
    "seed": 0,
    "batch_size": None,       # rows per sampling call; default all rows of a method in one call
    "dtype": "float32",
    "out_dir": "results/evaluate",
    "title": "",
}
METHOD_KEYS = {"arms", "arm_weights", "base_weight"}
BASE = "base"


# ------------------------------------------------------------------------------------ config

def load_eval_config(path: str | None, overrides: list[str] = ()) -> dict:
    """Defaults, then the YAML file, then `key=value` overrides (values read as YAML)."""
    from uniarm_jax.run_config import _closest

    config = copy.deepcopy(EVAL_DEFAULTS)
    updates = {}
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"evaluation config {path!r} does not exist")
        with open(path) as f:
            updates = yaml.safe_load(f) or {}
        if not isinstance(updates, dict):
            raise ConfigError(f"{path} must hold a mapping of keys to values")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        updates[key] = yaml.safe_load(raw) if raw else None
    for key, value in updates.items():
        if key not in EVAL_DEFAULTS:
            raise ConfigError(f"unknown evaluation key {key!r}{_closest(key, EVAL_DEFAULTS)}; valid keys are "
                              f"{sorted(EVAL_DEFAULTS)}")
        config[key] = value
    for key in ("base", "prompts", "objectives", "reference"):
        if config[key] is None:
            raise ConfigError(f"evaluation key {key!r} is not set; give it in the YAML file or as {key}=...")
    for name, spec in (config["methods"] or {}).items():
        if name == BASE:
            raise ConfigError(f"method name {BASE!r} is taken by the base model, which is always evaluated")
        if not isinstance(spec, dict) or not spec.get("arms"):
            raise ConfigError(f"method {name!r} needs 'arms': a list of ARM directories")
        unknown = set(spec) - METHOD_KEYS
        if unknown:
            raise ConfigError(f"method {name!r} has unknown key(s) {sorted(unknown)}; valid: {sorted(METHOD_KEYS)}")
    return config


def scorer_specs(objectives) -> list[dict]:
    """Built-in names become programmatic scorer specs; dicts pass through."""
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise ConfigError(f"objectives {objectives!r} must be a non-empty list of scorer names or specs")
    return [{"kind": "programmatic", "function": o} if isinstance(o, str) else o for o in objectives]


def preference_grid(config: dict, k: int) -> np.ndarray:
    """The explicit `prefs` (each checked to lie on the simplex) or the simplex grid of `grid_steps`."""
    if config["prefs"] is not None:
        if not isinstance(config["prefs"], (list, tuple)) or not config["prefs"]:
            raise ConfigError(f"prefs {config['prefs']!r} must be a non-empty list of preference vectors")
        return check_pref(config["prefs"], k).astype(np.float64)
    return simplex_grid(k, int(config["grid_steps"]))


def check_objective_order(method: str, paths: list[str], guides: list, names: list[str]) -> None:
    """An ARM that recorded what it learnt (`uniarm train` does) must match the scorers' order: a
    conditioned ARM its α order, GenARM's i-th ARM the i-th objective."""
    from uniarm_jax.arm import read_adapter_config

    for i, (path, guide) in enumerate(zip(paths, guides)):
        if guide.adapter_config is None:
            continue
        learnt = read_adapter_config(path).get("objectives")
        expected = names if guide.adapter_config.takes_pref else names[i:i + 1]
        if learnt is not None and list(learnt) != list(expected):
            raise ConfigError(f"method {method!r}: ARM {path!r} learnt objectives {learnt}; in this evaluation it "
                              f"stands for {expected} (objectives {names}); reorder the arms or the objectives")


# ------------------------------------------------------------------------------------ running

def run_method(base, tokenizer, guides, prompts: list[str], encoded: list[list[int]], prefs: np.ndarray | None,
               scorers, *, arm_weights=None, base_weight: float = 1.0, max_new_tokens: int, sampler: Sampler,
               seed: int = 0, batch_size: int | None = None) -> dict:
    """Every (α, prompt) row generated in one call (or chunks of `batch_size` rows of one shape) and
    scored. `prefs=None` runs the base alone, once per prompt. Returns the rows, their scores `[R, k]`,
    `r̄(α)` `[M, k]` (one row when `prefs` is None) and the generation time."""
    grid = [None] if prefs is None else list(prefs)
    rows = [(p, ids, a) for a in grid for p, ids in zip(prompts, encoded)]
    tokens, seconds = [], 0.0
    for _, out, elapsed in generate_in_chunks(base, guides, [r[1] for r in rows], max_new_tokens,
                                              prefs=None if prefs is None else [r[2] for r in rows],
                                              chunk_size=batch_size, seed=seed, arm_weights=arm_weights,
                                              base_weight=base_weight, sampler=sampler, pad_id=tokenizer.pad_token_id):
        tokens += out
        seconds += elapsed
    texts = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
    scores = score_responses(scorers, [r[0] for r in rows], texts)
    means = scores.reshape(len(grid), len(prompts), -1).mean(axis=1)
    names = [s.name for s in scorers]
    samples = [{"prompt": r[0], "pref": None if r[2] is None else [float(v) for v in r[2]], "text": text,
                "num_tokens": len(t), "scores": dict(zip(names, map(float, s)))}
               for r, text, t, s in zip(rows, texts, tokens, scores)]
    return {"samples": samples, "scores": scores, "means": means, "seconds": seconds,
            "mean_tokens": float(np.mean([len(t) for t in tokens]))}


def front_metrics(prefs: np.ndarray, means: np.ndarray, reference) -> dict:
    """HV, MIP and the non-dominated mask of one method's r̄(α) points (a single base point stands for
    every α in MIP)."""
    return {"hv": hypervolume(means, reference), "mip": mean_inner_product(prefs, np.broadcast_to(means, prefs.shape)),
            "non_dominated": non_dominated(means).tolist()}


# ------------------------------------------------------------------------------------ report

def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def write_report(out_dir: str, objectives: list[str], prefs: np.ndarray, results: dict, reference, config: dict,
                 title: str = "") -> dict:
    """`results.json`, `results.md`, `samples/<method>.jsonl` and the Pareto plots from `results`
    (method -> run_method's output, with `base` among them). Returns what went into results.json."""
    from uniarm_jax.plots import pareto_plots

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
    lines = [f"Reference point {_fmt(summary['reference'])} over ({', '.join(objectives)}); "
             f"{len(summary['prefs'])} preference vectors.", "",
             "| method | HV | MIP | non-dominated | mean tokens | generation s |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in methods.items():
        lines.append(f"| {name} | {m['hv']:.4f} | {m['mip']:.4f} | {sum(m['non_dominated'])}/{len(m['means'])} | "
                     f"{m['mean_tokens']:.1f} | {m['seconds']:.1f} |")
    guided = [n for n in methods if n != BASE]
    if guided:
        lines += ["", f"Mean scores r̄(α) = ({', '.join(objectives)}) per preference vector α:", "",
                  "| α | " + " | ".join(guided) + " |", "|---|" + "---|" * len(guided)]
        for i, alpha in enumerate(summary["prefs"]):
            lines.append(f"| {', '.join(f'{a:g}' for a in alpha)} | "
                         + " | ".join(_fmt(methods[n]["means"][i]) for n in guided) + " |")
    if summary["plots"]:
        lines += [""] + [f"![{p}]({p})" for p in summary["plots"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ command

def evaluate(config: dict, log=print) -> dict:
    """Runs `uniarm evaluate` for a loaded config; writes the outputs and returns the summary."""
    from uniarm_jax.pretrained import load_pretrained, load_tokenizer
    from uniarm_jax.sample import load_guides, read_prompts
    from uniarm_jax.scoring import make_scorers

    scorers = make_scorers(scorer_specs(config["objectives"]))
    names = [s.name for s in scorers]
    k = len(names)
    reference = np.asarray(config["reference"], np.float64)
    if reference.shape != (k,):
        raise ConfigError(f"reference point {config['reference']!r} must have {k} entries, one per objective {names}")
    prefs = preference_grid(config, k)
    prompts = read_prompts(config["prompts"])[: config["limit"] or None]
    base = load_pretrained(os.path.expanduser(config["base"]), dtype=config["dtype"])
    tokenizer = load_tokenizer(base.path)
    methods = {}
    for name, spec in config["methods"].items():  # every ARM is loaded and checked before anything runs
        guides, weights = load_guides(spec["arms"], spec.get("arm_weights"), base, tokenizer, config["dtype"])
        if num_objectives(guides) != k:
            raise ConfigError(f"method {name!r} guides {num_objectives(guides)} objectives; the evaluation scores "
                              f"{k}: {names}")
        check_objective_order(name, spec["arms"], guides, names)
        methods[name] = (guides, weights, float(spec.get("base_weight", 1.0)))
    encoded = encode_prompts(tokenizer, prompts, config["template"], config["max_new_tokens"],
                             base.config.max_position_embeddings, config["max_prompt_tokens"])
    sampler = Sampler(config["temperature"], config["top_k"], config["top_p"])
    common = dict(max_new_tokens=config["max_new_tokens"], sampler=sampler, seed=config["seed"],
                  batch_size=config["batch_size"])
    results = {BASE: run_method(base, tokenizer, [], prompts, encoded, None, scorers, **common)}
    check_reference(results[BASE]["means"], reference)
    log(f"{BASE}: {_fmt(results[BASE]['means'][0])} ({results[BASE]['seconds']:.1f} s)")
    for name, (guides, weights, base_weight) in methods.items():
        results[name] = run_method(base, tokenizer, guides, prompts, encoded, prefs, scorers, arm_weights=weights,
                                   base_weight=base_weight, **common)
        log(f"{name}: {len(results[name]['samples'])} responses ({results[name]['seconds']:.1f} s)")
    summary = write_report(config["out_dir"], names, prefs, results, reference, config, config["title"])
    log(markdown_table(summary))
    return summary
