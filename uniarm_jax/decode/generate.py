"""Generation for callers with many rows or text: fixed-shape chunks of `guided_generate`, rows
streamed through decode slots (continuous batching), the base alone, and text in / text out."""

from __future__ import annotations

import collections
import time

import numpy as np

from uniarm_jax import defaults
from uniarm_jax.data.batches import bucket_length
from uniarm_jax.data.tokenization import encode_prompts
from uniarm_jax.decode import engine
from uniarm_jax.decode.rollout import checked_rows, conditioned_arms, guided_generate, left_pad
from uniarm_jax.decode.sampling import Sampler
from uniarm_jax.decode.slots import BUCKET, DecodeSlots, SlotPlan


def generate_in_chunks(base, guides: list, prompts: list[list[int]], max_new_tokens: int, *, prefs=None,
                       chunk_size: int | None = None, seed: int = 0, **options):
    """`guided_generate` over many rows, `chunk_size` at a time (default: all in one call), yielding
    `(start, tokens, seconds)` per chunk with the tokens of its real rows. A short last chunk is padded
    with copies of its last row, so every chunk after the first reuses one compiled shape; the chunk at
    `start` samples with `seed + start`. `prefs` is one α per row, or None."""
    size = chunk_size or len(prompts)
    for start in range(0, len(prompts), size):
        end = min(start + size, len(prompts))
        rows = list(range(start, end))
        if start:
            rows += [rows[-1]] * (size - len(rows))
        began = time.perf_counter()
        tokens, _ = guided_generate(base, guides, [prompts[i] for i in rows], max_new_tokens,
                                    pref=None if prefs is None else np.stack([prefs[i] for i in rows]),
                                    seed=seed + start, **options)
        yield start, tokens[:end - start], time.perf_counter() - began


def generate_continuous(base, guides: list, prompts: list[list[int]], max_new_tokens: int, *, prefs=None,
                        arm_weights=None, base_weight: float = 1.0, sampler: Sampler = Sampler(), seed: int = 0,
                        slots: int = 32, pad_id: int | None = None, skip=()):
    """Each row's `guided_generate` alone (row i with seed + i), run `slots` rows at a time through the
    server's decode slots (`decode/slots.py`): a row that ends frees its slot for the next row at the
    next step, so no row waits for the longest answer of a chunk (the answers of a study end after ~45
    of 128 tokens: chunks spend most steps on rows already done). Yields `(row, tokens, seconds)` as
    rows finish, in finishing order, `seconds` the wall time since the previous yield; rows in `skip`
    (an earlier run has them) are left out. `prefs` is one α per row, or None."""
    rows = [i for i in range(len(prompts)) if i not in skip]
    if not rows:
        return
    pref_rows, weights, pad_id = checked_rows(base, guides, prompts, max_new_tokens, prefs, arm_weights, pad_id)
    cfg = base.config
    longest = bucket_length(max(len(prompts[i]) for i in rows), BUCKET, cfg.max_position_embeddings)
    plan = SlotPlan(cfg, tuple((g.config, g.adapter_config) for g in guides), min(slots, len(rows)),
                    longest + max_new_tokens, sampler.top_k, pad_id)
    k = pref_rows.shape[1] if pref_rows is not None and conditioned_arms(guides) else None
    device = DecodeSlots(plan, engine.decode_weights(base), tuple(engine.decode_weights(g) for g in guides), k,
                         mesh=base.mesh)
    eos = set(cfg.eos_token_ids)
    waiting, live = collections.deque(rows), {}  # live: slot -> (row, its tokens so far)
    clock = time.perf_counter()
    while waiting or live:
        for slot in range(plan.slots):
            if slot in live or not waiting:
                continue
            i = waiting.popleft()
            ids, mask = left_pad([prompts[i]], bucket_length(len(prompts[i]), BUCKET, cfg.max_position_embeddings),
                                 pad_id)
            device.join(slot, ids, mask, seed=seed + i, base_weight=base_weight, weights=weights[i],
                        pref=None if k is None else pref_rows[i], temperature=sampler.temperature,
                        top_p=sampler.top_p)
            live[slot] = (i, [])
        tokens = device.step()
        for slot, (i, out) in list(live.items()):
            out.append(int(tokens[slot]))
            if out[-1] in eos or len(out) == max_new_tokens:
                device.free(slot)
                del live[slot]
                now = time.perf_counter()
                yield i, out, now - clock
                clock = now


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
