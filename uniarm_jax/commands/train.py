"""Commands on training: `uniarm train` (an ARM from a run config) and `uniarm data` (what training sees)."""

from __future__ import annotations

from uniarm_jax.commands import options
from uniarm_jax.data.pairs import SCHEMAS
from uniarm_jax.data.templates import TEMPLATES


def train(args) -> None:
    from uniarm_jax.train.config import load_run_config
    from uniarm_jax.train.loop import train as run_training

    result = run_training(load_run_config(args.config, args.overrides))
    print(f"trained {result['step']} steps; adapter: {result['adapter']}")
    for name, value in result["dev"].items():
        print(f"dev {name}: {value:.4f}")


def data(args) -> None:
    import logging

    import datasets
    import numpy as np

    from uniarm_jax.data.pairs import DEFAULT_TEMPLATE, DROP_REASONS, load_preferences
    from uniarm_jax.data.tokenization import TokenizeConfig, tokenize_pairs
    from uniarm_jax.hf.pretrained import load_tokenizer

    datasets.disable_progress_bars()  # errors must stay one line
    datasets.logging.set_verbosity(logging.CRITICAL)
    template = args.template or DEFAULT_TEMPLATE[args.schema]
    config = TokenizeConfig(template=template, max_prompt_tokens=args.max_prompt_tokens,
                            max_total_tokens=args.max_total_tokens)
    objectives = args.objectives.split(",") if args.objectives else None
    data = load_preferences(args.file, args.schema, objectives=objectives, max_chars=args.max_chars)
    tokenizer = load_tokenizer(args.tokenizer)  # after the data: bad rows are reported at once
    pairs = tokenize_pairs(data, tokenizer, config)
    lengths = pairs.lengths().ravel()
    print(f"data: {args.file}")
    print(f"schema: {args.schema}")
    print(f"template: {template}")
    print(f"objectives: {','.join(data.objectives)}")
    print(f"rows read: {data.rows_read}")
    print(f"rows kept: {len(data)}")
    print(f"rows dropped: {sum(data.dropped.values())}")
    for reason, n in data.dropped.items():
        if n:
            print(f"dropped {reason}: {n} ({DROP_REASONS[reason]})")
    for name, frac in data.label_balance().items():
        print(f"prefer response_0 {name}: {frac:.3f}")
    print(f"prompts truncated: {int(pairs.prompt_truncated.sum())} of {len(pairs)} "
          f"(to {config.max_prompt_tokens} tokens with BOS, keeping their end)")
    print(f"responses truncated: {int(pairs.response_truncated.sum())} of {lengths.size} "
          f"(to fit {config.max_total_tokens} tokens)")
    for q in (50, 90, 99):
        print(f"total tokens p{q}: {int(np.percentile(lengths, q, method='higher'))}")
    print(f"total tokens max: {int(lengths.max())}")


def register(sub) -> None:
    p = sub.add_parser("train", help="train an ARM: uniarm train CONFIG.yaml [section.key=value ...]")
    p.add_argument("config", help="YAML experiment config (see configs/)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.learning_rate=1e-4")
    p.set_defaults(func=train)

    p = sub.add_parser("data", help="validate a preference data file and print what training would see")
    p.add_argument("file", help="a .json, .jsonl or .parquet file")
    p.add_argument("--schema", required=True, choices=SCHEMAS)
    p.add_argument("--tokenizer", required=True, help="Hugging Face directory holding the tokenizer")
    p.add_argument("--template", choices=TEMPLATES, default=None, help="default: pku for pku, raw otherwise")
    p.add_argument("--objectives", default=None, help="comma-separated subset of the data's objectives, in order")
    options.add_token_limits(p)
    p.add_argument("--max-chars", type=int, default=None, help="drop rows whose prompt + response is longer")
    p.set_defaults(func=data)
