"""Commands of the evaluation: `uniarm evaluate` (Pareto fronts from a config) and `uniarm make-data`
(the small-scale task's preference pairs)."""

from __future__ import annotations

from uniarm_jax import defaults
from uniarm_jax.commands import options
from uniarm_jax.errors import ConfigError


def evaluate(args) -> None:
    import dataclasses

    from uniarm_jax.eval.evaluate import evaluate as run_evaluation
    from uniarm_jax.eval.evaluate import load_eval_config

    config = load_eval_config(args.config, args.overrides)
    if args.arm_base is not None:
        config = dataclasses.replace(config, arm_base=args.arm_base)
    if args.quantize is not None:
        config = dataclasses.replace(config, quantize=args.quantize)
    run_evaluation(config)


def make_data(args) -> None:
    from uniarm_jax.eval.make_data import make_data as make_pairs

    try:  # counts of prompts when every value is an integer, else fractions
        values = args.splits.split(",")
        splits = tuple(int(v) if v.strip().isdigit() else float(v) for v in values)
        if any(isinstance(v, float) for v in splits):
            splits = tuple(float(v) for v in splits)
    except ValueError:
        splits = ()
    if len(splits) != 3:
        raise ConfigError(f"--splits {args.splits!r} needs three fractions train,dev,test, e.g. 0.8,0.05,0.15 "
                          "(or three counts of prompts, e.g. 580,40,100)")
    make_pairs(args.base, args.out, prompts_file=args.prompts, objectives=tuple(args.objectives.split(",")),
               limit=args.limit, splits=splits, max_new_tokens=args.max_new_tokens, samples=args.samples,
               degeneracy=args.degeneracy or None, sampler=options.sampler(args),
               seed=args.seed, template=args.template, batch_size=args.batch_size, dtype=args.dtype)


def register(sub) -> None:
    from uniarm_jax.eval.make_data import PAIR_SAMPLER, PROMPTS

    p = sub.add_parser("evaluate", help="Pareto-front evaluation of ARMs over a preference grid: "
                       "uniarm evaluate CONFIG.yaml [key=value ...]")
    p.add_argument("config", help="YAML evaluation config (uniarm_jax/eval/evaluate.py; the study writes its own, "
                   "docs/results/study/*/config.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. limit=10 out_dir=results/try")
    options.add_arm_base(p)  # the config's arm_base
    options.add_quantize(p, default_help="the config's quantize")
    p.set_defaults(func=evaluate)

    p = sub.add_parser("make-data", help="preference pairs of the study (docs/results.md): pairs of base samples per "
                       "prompt, labelled by offline objectives, split train/dev/test by prompt")
    p.add_argument("--base", required=True, help="Hugging Face directory of the model that samples the responses")
    p.add_argument("--out", required=True, help="directory for train/dev/test/all.jsonl and summary.json")
    p.add_argument("--prompts", default=PROMPTS, help='JSON lines {"prompt": ...} (default: the project\'s)')
    p.add_argument("--objectives", default="readability,relevance,vader",
                   help="comma-separated scorers: library kinds (readability, relevance, vader) or built-in "
                   "functions (brevity, informativeness, tone)")
    p.add_argument("--samples", type=int, default=4, help="responses sampled per prompt (even): samples/2 pairs")
    p.add_argument("--degeneracy", action="store_true",
                   help="degenerate responses (run-on repetition, empty, no EOS) lose on every objective")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--splits", default="0.8,0.05,0.15", help="train,dev,test fractions or counts of prompts")
    options.add_generation(p, max_new_tokens=defaults.MAX_NEW_TOKENS, temperature=PAIR_SAMPLER.temperature,
                           top_p=PAIR_SAMPLER.top_p, top_k=False)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=make_data)
