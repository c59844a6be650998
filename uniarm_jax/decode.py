"""Cached generation: prefill a left-padded prompt batch, then one `lax.scan` over the new tokens.

The whole rollout is one compiled function per (config, batch, bucket, max_new_tokens, sampler): the
prompts and the rng are arguments, the cache is created inside and never leaves the device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.config import LlamaConfig
from uniarm_jax.model import Llama, init_cache


def bucket_length(n: int, multiple: int = 32) -> int:
    """Prompt lengths are padded up to a multiple of `multiple`, so nearby lengths share one compile."""
    return max(multiple, -(-n // multiple) * multiple)


def left_pad(sequences: list[list[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """`[batch, length]` token ids and attention mask, each row right-aligned."""
    ids = np.full((len(sequences), length), pad_id, np.int32)
    mask = np.zeros((len(sequences), length), np.int32)
    for row, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"prompt {row} has {len(seq)} tokens; the bucket holds {length}")
        if seq:
            ids[row, length - len(seq):] = seq
            mask[row, length - len(seq):] = 1
    return ids, mask


def choose_token(logits: jax.Array, rng: jax.Array, temperature: float) -> jax.Array:
    """Greedy at temperature 0, else a sample from softmax(logits / temperature)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, logits / temperature, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "temperature", "eos_ids", "pad_id"))
def _rollout(params, ids, mask, rng, *, cfg: LlamaConfig, max_new_tokens: int, temperature: float,
             eos_ids: tuple, pad_id: int):
    model = Llama(cfg)
    batch, prompt_len = ids.shape
    cache = init_cache(cfg, batch, prompt_len + max_new_tokens)
    logits, state = model.apply({"params": params, "cache": cache}, ids, mask, mutable=["cache"])
    eos = jnp.asarray(eos_ids or (-1,), jnp.int32)

    def step(carry, _):
        cache, last, done, rng = carry
        rng, sub = jax.random.split(rng)
        token = jnp.where(done, pad_id, choose_token(last, sub, temperature))
        done = done | jnp.isin(token, eos)
        logits, state = model.apply({"params": params, "cache": cache}, token[:, None],
                                    jnp.ones((batch, 1), jnp.int32), mutable=["cache"])
        return (state["cache"], logits[:, -1], done, rng), token

    init = (state["cache"], logits[:, -1], jnp.zeros((batch,), bool), rng)
    _, tokens = jax.lax.scan(step, init, None, length=max_new_tokens)
    return tokens.T  # [batch, max_new_tokens]


def generate_ids(handle, prompts: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0, pad_id: int | None = None) -> list[list[int]]:
    """Generated token ids per prompt, up to and including the first EOS."""
    cfg = handle.config
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1; got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    pad_id = pad_id if pad_id is not None else (cfg.pad_token_id if cfg.pad_token_id is not None else 0)
    ids, mask = left_pad(prompts, bucket_length(max(len(p) for p in prompts)), pad_id)
    tokens = _rollout(handle.params, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(seed), cfg=cfg,
                      max_new_tokens=max_new_tokens, temperature=float(temperature),
                      eos_ids=cfg.eos_token_ids, pad_id=pad_id)
    out = []
    for row in np.asarray(tokens).tolist():
        ends = [i for i, t in enumerate(row) if t in cfg.eos_token_ids]
        out.append(row[: ends[0] + 1] if ends else row)
    return out


def generate(handle, tokenizer, prompts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
             seed: int = 0, chat: bool = True) -> list[str]:
    """Text responses to `prompts`, wrapped in the tokenizer's chat template when `chat` is set."""
    if chat and getattr(tokenizer, "chat_template", None):
        encoded = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False) for p in prompts]
        encoded = [list(e["input_ids"]) if isinstance(e, dict) or hasattr(e, "keys") else list(e)
                   for e in encoded]
    else:
        encoded = [tokenizer.encode(p) for p in prompts]
    out = generate_ids(handle, encoded, max_new_tokens, temperature, seed, pad_id=tokenizer.pad_token_id)
    return [tokenizer.decode(t, skip_special_tokens=True) for t in out]
