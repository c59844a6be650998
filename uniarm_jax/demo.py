"""`uniarm demo` (the README's main command): one UniARM steering the real SmolLM2-135M-Instruct.

It loads the base and the UniARM adapter committed in `demo/uniarm_smollm2` (trained by this project's
own `uniarm train`; `demo/README.md` records the command), generates for a few held-out prompts of the
small-scale task under the 11-point preference grid in one batched call, prints the responses and
their per-objective scores at three α, and writes the Pareto front (plot, tables, every sample) as
`uniarm evaluate` does.
"""

from __future__ import annotations

import os
import time

import numpy as np

from uniarm_jax.errors import ConfigError
from uniarm_jax.pareto import simplex_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_ARM = os.path.join(ROOT, "demo", "uniarm_smollm2")
TEST_PROMPTS = os.path.join(ROOT, "data", "small_task", "test.jsonl")
SHOWN_PREFS = ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0))


def run_demo(args, log=print) -> dict:
    from uniarm_jax.arm import load_adapter, read_adapter_config
    from uniarm_jax.decode import Sampler
    from uniarm_jax.evaluate import BASE, markdown_table, run_method, write_report
    from uniarm_jax.pretrained import load_pretrained, load_tokenizer
    from uniarm_jax.sample import read_prompts
    from uniarm_jax.scoring import make_scorers
    from uniarm_jax.smollm2 import prepare_smollm2
    from uniarm_jax.tokenization import encode_prompts

    began = time.perf_counter()
    path = prepare_smollm2()
    base = load_pretrained(path, dtype=args.dtype)
    tokenizer = load_tokenizer(path)
    arm = load_adapter(base, args.arm)
    names = read_adapter_config(args.arm).get("objectives")
    if not arm.adapter_config.takes_pref or names is None or len(names) != 2:
        raise ConfigError(f"{args.arm} holds a {arm.adapter_config.kind} adapter with objectives {names}; the demo "
                          "needs a preference-conditioned ARM trained by `uniarm train` on two objectives")
    scorers = make_scorers([{"kind": "programmatic", "function": n} for n in names])
    prompts = read_prompts(args.prompts)[: args.num_prompts]
    log(f"base {path} ({base.num_params} parameters); UniARM {args.arm} ({arm.adapter_config.kind}, "
        f"objectives {', '.join(names)}); {len(prompts)} prompts")
    encoded = encode_prompts(tokenizer, prompts, "chat", args.max_new_tokens, base.config.max_position_embeddings)
    prefs = simplex_grid(2, 10)
    common = dict(max_new_tokens=args.max_new_tokens, sampler=Sampler(), seed=args.seed)
    results = {BASE: run_method(base, tokenizer, [], prompts, encoded, None, scorers, **common),
               "uniarm": run_method(base, tokenizer, [arm], prompts, encoded, prefs, scorers, **common)}

    shown = [i for i, p in enumerate(prefs) if tuple(p) in SHOWN_PREFS]
    for j, prompt in enumerate(prompts[: args.show]):
        log(f"\n>>> {prompt}")
        row = results[BASE]["samples"][j]
        log(f"  [base alone] {_scores(row['scores'])}\n    {row['text']}")
        for i in shown:
            row = results["uniarm"]["samples"][i * len(prompts) + j]
            log(f"  [α = {', '.join(f'{a:g}' for a in row['pref'])}] {_scores(row['scores'])}\n    {row['text']}")
    summary = write_report(args.out, names, prefs, results, np.zeros(2),
                           {"base": path, "arm": args.arm, "prompts": args.prompts, "num_prompts": len(prompts),
                            "max_new_tokens": args.max_new_tokens}, title="UniARM on SmolLM2-135M-Instruct")
    log("\n" + markdown_table(summary))
    log(f"wrote {args.out}/ (pareto.png, results.md, results.json, samples/) in "
        f"{time.perf_counter() - began:.0f} s")
    return summary


def _scores(scores: dict) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in scores.items())

