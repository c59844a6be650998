"""`uniarm demo` (the README's main command): one UniARM steering the real SmolLM2-135M-Instruct.

It loads the base and the UniARM adapter committed in `demo/uniarm_smollm2` (trained by this project's
own `uniarm train`; `demo/README.md` records the command), generates for the prompts of
`demo/prompts.jsonl` (held-out test prompts of the study; `demo/README.md` says which) under the
11-point preference grid, prints the responses and their per-objective scores at three α, how many
different responses each prompt got across α and the share of degenerate ones, and writes the Pareto
front (plot, tables, every sample) as `uniarm evaluate` does, degenerate responses scoring as failures
and the failure values as the reference point.
"""

from __future__ import annotations

import os
import time

import numpy as np

from uniarm_jax import defaults
from uniarm_jax.commands import options
from uniarm_jax.errors import ConfigError

DEMO_ARM = os.path.join(defaults.REPO, "demo", "uniarm_smollm2")
DEMO_PROMPTS = os.path.join(defaults.REPO, "demo", "prompts.jsonl")
SHOWN_PREFS = ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0))
ARM_WEIGHT = 0.5  # the UniARM's guidance weight: the committed adapter's, as demo/README.md shows it


def run_demo(arm_dir: str = DEMO_ARM, prompts_file: str = DEMO_PROMPTS, num_prompts: int = 8, show: int = 3,
             max_new_tokens: int = defaults.MAX_NEW_TOKENS, arm_weight: float = ARM_WEIGHT, seed: int = 0,
             dtype: str = defaults.DTYPE, out_dir: str = "demo_out", log=print) -> dict:
    """The demo: returns what went into `out_dir/results.json`."""
    from uniarm_jax.data.prompts import read_prompts
    from uniarm_jax.data.tokenization import encode_prompts
    from uniarm_jax.decode.sampling import Sampler
    from uniarm_jax.eval.evaluate import run_method
    from uniarm_jax.eval.pareto import simplex_grid
    from uniarm_jax.eval.report import BASE, distinct_per_prompt, distinct_responses, markdown_table, write_report
    from uniarm_jax.eval.scoring import make_scorers, scorer_specs
    from uniarm_jax.eval.scoring.degeneracy import DegeneracyRule
    from uniarm_jax.hf.adapter_files import load_adapter, read_adapter
    from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer
    from uniarm_jax.hf.smollm2 import prepare_smollm2

    began = time.perf_counter()
    path = prepare_smollm2()
    base = load_pretrained(path, dtype=dtype)
    tokenizer = load_tokenizer(path)
    arm = load_adapter(base, arm_dir)
    names = read_adapter(arm_dir).objectives
    if not arm.adapter_config.takes_pref or names is None or len(names) != 2:
        raise ConfigError(f"{arm_dir} holds a {arm.adapter_config.kind} adapter with objectives {names}; the demo "
                          "needs a preference-conditioned ARM trained by `uniarm train` on two objectives")
    scorers = make_scorers(scorer_specs(names))
    prompts = read_prompts(prompts_file)[:num_prompts]
    log(f"base {path} ({base.num_params} parameters); UniARM {arm_dir} ({arm.adapter_config.kind}, "
        f"objectives {', '.join(names)}); {len(prompts)} prompts")
    encoded = encode_prompts(tokenizer, prompts, "chat", max_new_tokens, base.config.max_position_embeddings)
    prefs = simplex_grid(2, 10)
    common = dict(max_new_tokens=max_new_tokens, sampler=Sampler(), seed=seed, rule=DegeneracyRule(),
                  batch_size=len(prompts) * len(prefs))
    results = {BASE: run_method(base, tokenizer, [], prompts, encoded, None, scorers, **common),
               "uniarm": run_method(base, tokenizer, [arm], prompts, encoded, prefs, scorers,
                                    arm_weights=[arm_weight], **common)}

    shown = [i for i, p in enumerate(prefs) if tuple(p) in SHOWN_PREFS]
    for j, prompt in enumerate(prompts[:show]):
        log(f"\n>>> {prompt}")
        row = results[BASE]["samples"][j]
        log(f"  [base alone] {_scores(row['scores'])}\n    {row['text']}")
        for i in shown:
            row = results["uniarm"]["samples"][i * len(prompts) + j]
            log(f"  [α = {', '.join(f'{a:g}' for a in row['pref'])}] {_scores(row['scores'])}\n    {row['text']}")
    uniarm = results["uniarm"]["samples"]
    distinct = list(distinct_per_prompt(uniarm).values())
    log(f"\ndifferent responses per prompt across the {len(prefs)} α: {distinct} (mean "
        f"{distinct_responses(uniarm):.1f}); degenerate: {np.mean(results['uniarm']['degenerate']):.1%} of the "
        f"UniARM's, {np.mean(results[BASE]['degenerate']):.1%} of the base's")
    summary = write_report(out_dir, names, prefs, results, np.array([s.failure for s in scorers]),
                           {"base": path, "arm": arm_dir, "arm_weight": arm_weight, "prompts": prompts_file,
                            "num_prompts": len(prompts), "max_new_tokens": max_new_tokens},
                           title="UniARM on SmolLM2-135M-Instruct", resamples=0)
    log("\n" + markdown_table(summary))
    log(f"wrote {out_dir}/ (pareto.png, results.md, results.json, samples/) in "
        f"{time.perf_counter() - began:.0f} s")
    return summary


def _scores(scores: dict) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in scores.items())


def demo(args) -> None:
    run_demo(args.arm, args.prompts, args.num_prompts, args.show, args.max_new_tokens, args.arm_weight, args.seed,
             args.dtype, args.out)


def register(sub) -> None:
    p = sub.add_parser("demo", help="a UniARM steering SmolLM2-135M-Instruct across preference vectors")
    p.add_argument("--arm", default=DEMO_ARM, help="a UniARM/PARM adapter directory on SmolLM2 with two objectives")
    p.add_argument("--prompts", default=DEMO_PROMPTS, help='JSON lines {"prompt": ...}')
    p.add_argument("--num-prompts", type=int, default=8, help="how many prompts the Pareto front averages over")
    p.add_argument("--show", type=int, default=3, help="how many prompts to print responses for")
    p.add_argument("--max-new-tokens", type=int, default=defaults.MAX_NEW_TOKENS)
    p.add_argument("--arm-weight", type=float, default=ARM_WEIGHT, help="the UniARM's guidance weight")
    p.add_argument("--seed", type=int, default=0)
    options.add_dtype(p)
    p.add_argument("--out", default="demo_out", help="where the plot, tables and samples go")
    p.set_defaults(func=demo)
