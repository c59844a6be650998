"""`uniarm evaluate`: generate → score → metrics → plots for several methods over one preference grid.

The papers judge a method by the Pareto front of its generations (docs/methods.md §4): for every α of a
grid, guided generation on the test prompts, every response scored by one reward per objective, and
`r̄(α)` the mean score vector. Every method streams all its (α, prompt) rows through `batch_size`
decode slots (`generate_continuous`: a row that ends frees its slot for the next, α is per row), so a
grid costs one compilation per step width and prompt bucket. The base model alone is always
evaluated too, once (α does not reach it): its point is the reference every method is read against.

Outputs in `out_dir`: `samples/<method>.jsonl` (every response with its α and scores),
`generations/<method>.jsonl` (the finished rows' tokens: a rerun of an interrupted evaluation
generates only what is missing, `row_log.py`),
`results.json` (the configuration, the grid, the reference point, r̄(α), HV, MIP and the
non-dominated points per method), `results.md` (the same as tables) and the Pareto plots.

A config is YAML (the fields of `EvalConfig`), with `key=value` overrides on the command line:

    base: ~/.cache/uniarm_jax/SmolLM2-135M-Instruct
    prompts: data/study/test_prompts.jsonl    # JSON lines with a "prompt" field
    objectives: [readability, relevance]      # scorer names or dicts (see eval/scoring/)
    reference: [0.0, -1.0]                    # the HV reference point: every point must dominate it
    degeneracy: true                          # run-on, near-empty, unended responses fail every objective
    methods:
      genarm: {arms: [runs/genarm_readability/adapter, runs/genarm_relevance/adapter]}
      uniarm: {arms: [runs/uniarm/adapter]}
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from uniarm_jax import defaults
from uniarm_jax.config_files import load_config, require, to_dict
from uniarm_jax.data.prompts import read_prompts
from uniarm_jax.data.tokenization import encode_prompts
from uniarm_jax.decode.generate import generate_continuous
from uniarm_jax.decode.guides import load_guides
from uniarm_jax.decode.rollout import num_objectives
from uniarm_jax.decode.sampling import Sampler
from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.pareto import check_reference, simplex_grid
from uniarm_jax.eval.report import BASE, format_point, markdown_table, write_report
from uniarm_jax.eval.row_log import RowLog, digest, model_identity
from uniarm_jax.eval.scoring import make_scorers, score_responses, scorer_specs
from uniarm_jax.eval.scoring.degeneracy import DegeneracyRule
from uniarm_jax.hf.adapter_files import read_adapter
from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer
from uniarm_jax.model.preferences import check_pref
from uniarm_jax.model.quantize import check_quantize


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One guided method: its ARM directories (GenARM: one per objective, in α order), their weights."""

    arms: tuple[str, ...] = ()
    arm_weights: tuple[float, ...] | None = None
    base_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    base: str | None = None               # Hugging Face directory of the frozen base
    prompts: str | None = None            # JSON lines with a "prompt" field (e.g. make-data's test.jsonl)
    limit: int | None = None              # use only the first N prompts
    objectives: tuple[Any, ...] | None = None  # one scorer (a built-in name or a spec) per objective, in α order
    reference: tuple[float, ...] | None = None  # HV reference point [k], recorded with the results
    grid_steps: int = 10                  # the simplex grid: entries in {0, 1/steps, ..., 1}; k=2, 10 -> 11 points
    prefs: tuple[tuple[float, ...], ...] | None = None  # or an explicit list of preference vectors
    methods: dict[str, MethodSpec] = dataclasses.field(default_factory=dict)
    arm_base: str | None = None           # the base of ARMs not on `base` nor at their recorded path (--arm-base)
    template: str = defaults.TEMPLATE
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS
    temperature: float = defaults.TEMPERATURE
    top_k: int = defaults.TOP_K
    top_p: float = defaults.TOP_P
    seed: int = 0
    batch_size: int = 32                  # rows decoded at once (decode slots: a finished row's slot takes the next)
    dtype: str = defaults.DTYPE
    degeneracy: Any = None                # a DegeneracyRule's fields (true: its defaults; None/false: off)
    quantize: str | None = None           # "int8": int8 projection kernels for the base and the ARMs' bases
    compare: tuple[tuple[str, str], ...] = ()  # (a, b) method pairs: a − b of HV and MIP, paired over prompts
    bootstrap: int = 1000                 # bootstrap replicates for the 95% intervals (0: none)
    out_dir: str = "results/evaluate"
    title: str = ""

    def __post_init__(self):
        check_quantize(self.quantize)

    @property
    def sampler(self) -> Sampler:
        return Sampler(self.temperature, self.top_k, self.top_p)

    @property
    def degeneracy_rule(self) -> DegeneracyRule | None:
        return DegeneracyRule.from_spec(self.degeneracy)


def load_eval_config(path: str | None, overrides=()) -> EvalConfig:
    """Defaults, then the YAML file, then `key=value` overrides (values read as YAML), all checked."""
    config = load_config(EvalConfig, path, overrides, source="command line")
    require(config, ("base", "prompts", "objectives", "reference"), path or "command line")
    DegeneracyRule.from_spec(config.degeneracy)  # checked before any model is loaded
    for name, spec in config.methods.items():
        if name == BASE:
            raise ConfigError(f"method name {BASE!r} is taken by the base model, which is always evaluated")
        if not spec.arms:
            raise ConfigError(f"method {name!r} needs 'arms': a list of ARM directories")
    known = [BASE, *config.methods]
    for pair in config.compare:
        if len(pair) != 2 or any(n not in known for n in pair):
            raise ConfigError(f"compare entry {list(pair)!r}; expected two of the methods {known}")
    if config.batch_size < 1:
        raise ConfigError(f"batch_size={config.batch_size}; expected at least 1 row decoded at once")
    if config.bootstrap < 0:
        raise ConfigError(f"bootstrap={config.bootstrap!r}; expected a number of replicates (0: no intervals)")
    return config


def preference_grid(config: EvalConfig, k: int) -> np.ndarray:
    """The explicit `prefs` (each checked to lie on the simplex) or the simplex grid of `grid_steps`."""
    if config.prefs is not None:
        if not config.prefs:
            raise ConfigError("prefs must be a non-empty list of preference vectors")
        return check_pref(config.prefs, k).astype(np.float64)
    return simplex_grid(k, config.grid_steps)


def check_objective_order(method: str, paths: list[str], guides: list, names: list[str]) -> None:
    """An ARM that recorded what it learnt (`uniarm train` does) must match the scorers' order: a
    conditioned ARM its α order, GenARM's i-th ARM the i-th objective."""
    for i, (path, guide) in enumerate(zip(paths, guides)):
        if guide.adapter_config is None:
            continue
        learnt = read_adapter(path).objectives
        expected = names if guide.adapter_config.takes_pref else names[i:i + 1]
        if learnt is not None and list(learnt) != list(expected):
            raise ConfigError(f"method {method!r}: ARM {path!r} learnt objectives {learnt}; in this evaluation it "
                              f"stands for {expected} (objectives {names}); reorder the arms or the objectives")


# ------------------------------------------------------------------------------------ running

def run_method(base, tokenizer, guides, prompts: list[str], encoded: list[list[int]], prefs: np.ndarray | None,
               scorers, *, arm_weights=None, base_weight: float = 1.0, max_new_tokens: int, sampler: Sampler,
               seed: int = 0, batch_size: int = 32, rule: DegeneracyRule | None = None,
               resume: tuple[str, dict] | None = None) -> dict:
    """Every (α, prompt) row generated (`batch_size` rows at once through decode slots, a finished row's
    slot taking the next row) and scored. `prefs=None` runs the base alone, once per prompt. A `rule`
    gives its degenerate responses every objective's failure value (a response without EOS never
    ended). `resume` = (file, the models' identities) keeps finished rows in a `RowLog`, so a rerun
    generates only the rest. Returns the rows, their scores `[R, k]`, `r̄(α)` `[M, k]` (one row when
    `prefs` is None), the share of degenerate responses per α (with a rule) and the generation time."""
    grid = [None] if prefs is None else list(prefs)
    rows = [(p, ids, a) for a in grid for p, ids in zip(prompts, encoded)]
    row_prefs = None if prefs is None else [r[2] for r in rows]
    done, log = {}, None
    if resume is not None:
        key = digest({"rows": [r[1] for r in rows], "prefs": None if prefs is None else np.asarray(prefs).tolist(),
                      "models": resume[1], "arm_weights": None if arm_weights is None else list(arm_weights),
                      "base_weight": base_weight, "max_new_tokens": max_new_tokens, "seed": seed,
                      "sampler": dataclasses.asdict(sampler)})
        log = RowLog(resume[0], key)
        done = dict(log.done)
    for i, out, elapsed in generate_continuous(base, guides, [r[1] for r in rows], max_new_tokens, prefs=row_prefs,
                                               slots=batch_size, seed=seed, skip=done, arm_weights=arm_weights,
                                               base_weight=base_weight, sampler=sampler,
                                               pad_id=tokenizer.pad_token_id):
        done[i] = (out, elapsed)
        if log is not None:
            log.add(i, out, elapsed)
    tokens = [done[i][0] for i in range(len(rows))]
    seconds = sum(elapsed for _, elapsed in done.values())
    texts = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
    eos = set(base.config.eos_token_ids)
    reasons = None if rule is None else rule.reasons(texts, [bool(t) and t[-1] in eos for t in tokens])
    scores = score_responses(scorers, [r[0] for r in rows], texts, reasons)
    means = scores.reshape(len(grid), len(prompts), -1).mean(axis=1)
    names = [s.name for s in scorers]
    samples = [{"prompt": r[0], "pref": None if r[2] is None else [float(v) for v in r[2]], "text": text,
                "num_tokens": len(t), "scores": dict(zip(names, map(float, s)))}
               for r, text, t, s in zip(rows, texts, tokens, scores)]
    out = {"samples": samples, "scores": scores, "means": means, "seconds": seconds,
           "mean_tokens": float(np.mean([len(t) for t in tokens]))}
    if reasons is not None:
        for row, why in zip(samples, reasons):
            row["degenerate"] = why
        out["degenerate"] = np.array([bool(w) for w in reasons]).reshape(len(grid), len(prompts)).mean(axis=1)
    return out


def evaluate(config: EvalConfig, log=print) -> dict:
    """Runs `uniarm evaluate` for a loaded config; writes the outputs and returns the summary."""
    scorers = make_scorers(scorer_specs(config.objectives))
    names = [s.name for s in scorers]
    k = len(names)
    reference = np.asarray(config.reference, np.float64)
    if reference.shape != (k,):
        raise ConfigError(f"reference point {list(config.reference)!r} must have {k} entries, one per objective "
                          f"{names}")
    prefs = preference_grid(config, k)
    prompts = read_prompts(config.prompts)[: config.limit or None]
    base = load_pretrained(os.path.expanduser(config.base), dtype=config.dtype, quantize=config.quantize)
    tokenizer = load_tokenizer(base.path)
    methods = {}
    for name, spec in config.methods.items():  # every ARM is loaded and checked before anything runs
        guides, weights = load_guides(list(spec.arms), spec.arm_weights, base, tokenizer, config.dtype,
                                      arm_base=config.arm_base and os.path.expanduser(config.arm_base))
        if num_objectives(guides) != k:
            raise ConfigError(f"method {name!r} guides {num_objectives(guides)} objectives; the evaluation scores "
                              f"{k}: {names}")
        check_objective_order(name, list(spec.arms), guides, names)
        methods[name] = (guides, weights, spec.base_weight)
    encoded = encode_prompts(tokenizer, prompts, config.template, config.max_new_tokens,
                             base.config.max_position_embeddings, config.max_prompt_tokens)
    common = dict(max_new_tokens=config.max_new_tokens, sampler=config.sampler, seed=config.seed,
                  batch_size=config.batch_size, rule=config.degeneracy_rule)
    models = {"base": model_identity(base.path), "dtype": config.dtype, "quantize": config.quantize}

    def resume(name, arms=()):  # finished rows of this method, kept across runs (eval/row_log.py)
        return (os.path.join(config.out_dir, "generations", f"{name}.jsonl"),
                models | {"arms": [model_identity(os.path.expanduser(a)) for a in arms]})

    results = {BASE: run_method(base, tokenizer, [], prompts, encoded, None, scorers, resume=resume(BASE), **common)}
    check_reference(results[BASE]["means"], reference)
    log(f"{BASE}: {format_point(results[BASE]['means'][0])} ({results[BASE]['seconds']:.1f} s)")
    for name, (guides, weights, base_weight) in methods.items():
        results[name] = run_method(base, tokenizer, guides, prompts, encoded, prefs, scorers, arm_weights=weights,
                                   base_weight=base_weight, resume=resume(name, config.methods[name].arms), **common)
        log(f"{name}: {len(results[name]['samples'])} responses ({results[name]['seconds']:.1f} s)")
    summary = write_report(config.out_dir, names, prefs, results, reference, to_dict(config), config.title,
                           compare=config.compare, resamples=config.bootstrap)
    log(markdown_table(summary))
    return summary
