"""Generation for callers with many rows or text: fixed-shape chunks of `guided_generate`, the base
alone, and text in / text out."""

from __future__ import annotations

import time

import numpy as np

from uniarm_jax import defaults
from uniarm_jax.data.tokenization import encode_prompts
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.decode.sampling import Sampler


def generate_in_chunks(base, guides: list, prompts: list[list[int]], max_new_tokens: int, *, prefs=None,
                       chunk_size: int | None = None, seed: int = 0, skip=(), **options):
    """`guided_generate` over many rows, `chunk_size` at a time (default: all in one call), yielding
    `(start, tokens, seconds)` per chunk with the tokens of its real rows. A short last chunk is padded
    with copies of its last row, so every chunk after the first reuses one compiled shape; the chunk at
    `start` samples with `seed + start`, so it is the same whichever chunks run before it: the chunks
    whose start is in `skip` (an earlier run has them) are left out. `prefs` is one α per row, or None."""
    size = chunk_size or len(prompts)
    for start in range(0, len(prompts), size):
        if start in skip:
            continue
        end = min(start + size, len(prompts))
        rows = list(range(start, end))
        if start:
            rows += [rows[-1]] * (size - len(rows))
        began = time.perf_counter()
        tokens, _ = guided_generate(base, guides, [prompts[i] for i in rows], max_new_tokens,
                                    pref=None if prefs is None else np.stack([prefs[i] for i in rows]),
                                    seed=seed + start, **options)
        yield start, tokens[:end - start], time.perf_counter() - began


def generate_ids(handle, prompts: list[list[int]], max_new_tokens: int, sampler: Sampler = Sampler(),
                 seed: int = 0, pad_id: int | None = None) -> list[list[int]]:
    """The base model alone: generated token ids per prompt, up to and including the first EOS."""
    return guided_generate(handle, [], prompts, max_new_tokens, sampler=sampler, seed=seed, pad_id=pad_id)[0]


def generate(handle, tokenizer, prompts: list[str], max_new_tokens: int = defaults.MAX_NEW_TOKENS,
             sampler: Sampler = Sampler(), seed: int = 0, template: str = defaults.TEMPLATE) -> list[str]:
    """Text responses of the base model to `prompts`, framed by `template` as in training."""
    encoded = encode_prompts(tokenizer, prompts, template, max_new_tokens, handle.config.max_position_embeddings)
    out = generate_ids(handle, encoded, max_new_tokens, sampler, seed, pad_id=tokenizer.pad_token_id)
    return [tokenizer.decode(t, skip_special_tokens=True) for t in out]
