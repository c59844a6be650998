"""The `uniarm` command: one parser, each command registered by the module that runs it.

    uniarm prepare-smollm2 [--out DIR] [--force]      build the real SmolLM2-135M-Instruct HF directory
    uniarm info --base HF_DIR [--adapter KIND ...]     configuration and parameter counts (no weights read)
    uniarm export --base HF_DIR --adapter DIR --out DIR [--pref a,b] [--format peft|merged]
    uniarm generate --base HF_DIR --prompt TEXT ...    cached generation from the base model
    uniarm convert --base HF_DIR --out DIR [--dtype D] load and write back a Hugging Face directory
    uniarm truncate --base HF_DIR --first N [--last M] --out DIR   a shallower model (a weak ARM's base)
    uniarm sample --base HF_DIR [--arm PATH]... [--pref a,b]... --prompts F --out F   guided decoding
    uniarm serve --base HF_DIR [--arm PATH]... [--port 8000] [--slots N]   OpenAI-compatible server, α per request
    uniarm train CONFIG.yaml [section.key=value ...]   train an ARM (GenARM, PARM or UniARM)
    uniarm data FILE --schema S --tokenizer HF_DIR ... validate a preference file; print what training sees
    uniarm evaluate CONFIG.yaml [key=value ...]        generate -> score -> HV/MIP -> Pareto plots, per method
    uniarm make-data --base HF_DIR --out DIR ...       the study's pairs from the base's samples
    uniarm demo                                        a UniARM steering SmolLM2 under several α; Pareto plot

The project's own errors (`uniarm_jax.errors`: bad input) print one line and exit with status 2, a
stopped training run with 3; anything else is a bug and keeps its traceback. Compiled programs are
kept in JAX's persistent cache (`uniarm_jax/compilation.py`; `UNIARM_COMPILE_CACHE=off` turns it off).
"""

from __future__ import annotations

import argparse
import sys

from uniarm_jax.commands import demo, evaluate, models, sample, serve, train
from uniarm_jax.compilation import enable_persistent_cache
from uniarm_jax.errors import TrainingError, UniarmError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniarm", description="UniARM / GenARM / PARM in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (models, sample, serve, train, evaluate, demo):
        module.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    enable_persistent_cache()
    try:
        args.func(args)
    except TrainingError as e:
        print(f"uniarm {args.command}: stopped: {e}", file=sys.stderr)
        return 3
    except UniarmError as e:
        print(f"uniarm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
