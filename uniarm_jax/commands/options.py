"""Option groups that several `uniarm` commands share, each declared once with its default."""

from __future__ import annotations

import argparse

from uniarm_jax import defaults
from uniarm_jax.data.templates import TEMPLATES
from uniarm_jax.model.config import DTYPES
from uniarm_jax.model.quantize import QUANTIZATIONS


def add_dtype(p: argparse.ArgumentParser, help: str = "the weights' dtype") -> None:
    p.add_argument("--dtype", choices=DTYPES, default=defaults.DTYPE, help=help)


def add_quantize(p: argparse.ArgumentParser, default_help: str = "float weights") -> None:
    """The one model flag of int8 bases (sample, evaluate, serve): every model the command loads gets it."""
    p.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                   help="int8: per-channel int8 projection kernels for the base (and a weak ARM's base, a full ARM); "
                   f"adapters stay float32 (default: {default_help})")


def add_generation(p: argparse.ArgumentParser, *, max_new_tokens: int = defaults.MAX_NEW_TOKENS,
                   temperature: float = defaults.TEMPERATURE, top_p: float = defaults.TOP_P,
                   top_k: bool = True) -> None:
    """How responses are generated: length, template, sampler, seed, dtype. A command whose task fixes
    other defaults (make-data samples pairs at T = 1) passes them; the flags are the same everywhere."""
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--template", choices=TEMPLATES, default=defaults.TEMPLATE, help="how prompts are framed")
    p.add_argument("--temperature", type=float, default=temperature, help="0 is greedy")
    if top_k:
        p.add_argument("--top-k", type=int, default=defaults.TOP_K, help="0 turns it off")
    p.add_argument("--top-p", type=float, default=top_p, help="1 turns it off")
    p.add_argument("--seed", type=int, default=0)
    add_dtype(p)


def add_arm_base(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arm-base", default=None, metavar="DIR",
                   help="the base of ARMs whose own base is not the decoding base and not at its recorded path: "
                   "a moved base, or the local copy of a PEFT ARM's base_model_name_or_path (e.g. a hub id)")


def sampler(args: argparse.Namespace):
    """The `decode.Sampler` the generation options describe."""
    from uniarm_jax.decode.sampling import Sampler

    return Sampler(args.temperature, getattr(args, "top_k", defaults.TOP_K), args.top_p)


def add_token_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-prompt-tokens", type=int, default=defaults.MAX_PROMPT_TOKENS,
                   help="BOS included; a longer prompt keeps its end")
    p.add_argument("--max-total-tokens", type=int, default=defaults.MAX_TOTAL_TOKENS)
