"""Guided decoding: the frozen base and its ARM(s) score every next token; the scores are combined under
the preference vector α and one token is chosen. The whole rollout is one compiled function.

    log π_dec(v) = w_base · log_softmax(base)[v] + Σ_i w_i · log_softmax(arm_i)[v]   (− log Z)

- GenARM: k plain ARMs (LoRA or full fine-tunes), `w_i = arm_weight_i · α_i`.
- PARM / UniARM: one preference-conditioned ARM run under the row's α, `w = arm_weight` (default 1).
- base only: no guides; ARM only: `base_weight = 0`.
An ARM's logits are cut to the base vocabulary (Alpaca's 32001 tokens vs Llama's 32000).

The loop: prefill the base and every ARM on the left-padded prompt batch, then a `lax.while_loop` that
stops as soon as every row has emitted EOS (or after `max_new_tokens`), its carry holding the tokens,
done flags, rng and every model's KV cache. The caches are created inside the compiled function and
updated in place, never copied back to the host. α, weights, prompts and the seed are arguments: a
change of preference or of prompt within a length bucket never recompiles.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.batches import bucket_length
from uniarm_jax.config import LlamaConfig
from uniarm_jax.errors import ConfigError
from uniarm_jax.model import Llama, init_cache
from uniarm_jax.preferences import check_pref


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How a token is chosen from the combined log-probs: greedy at temperature 0."""

    temperature: float = 0.0
    top_k: int = 0      # 0: no top-k cut
    top_p: float = 1.0  # 1: no nucleus cut

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 is greedy); got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 turns it off); got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1]; got {self.top_p}")


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


def combine_logprobs(base_logits, arm_logits: tuple, weights, base_weight: float):
    """`[batch, vocab_base]` unnormalised log π_dec from float32 logits; `weights` is `[batch, n_arms]`."""
    vocab = base_logits.shape[-1]
    out = base_weight * jax.nn.log_softmax(base_logits, axis=-1)
    for i, logits in enumerate(arm_logits):
        out = out + weights[:, i:i + 1] * jax.nn.log_softmax(logits[:, :vocab], axis=-1)
    return out


def choose_token(logp, rng, sampler: Sampler):
    """Greedy at temperature 0; else top-k / top-p filtering, then a sample of softmax(logp / T)."""
    if sampler.temperature == 0:
        return jnp.argmax(logp, axis=-1).astype(jnp.int32)
    logits = logp / sampler.temperature
    if sampler.top_k:
        kth = jax.lax.top_k(logits, sampler.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampler.top_p < 1:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
        cut_sorted = jnp.where(before >= sampler.top_p, -jnp.inf, sorted_logits)
        logits = jnp.full_like(logits, -jnp.inf).at[jnp.arange(logits.shape[0])[:, None], order].set(cut_sorted)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything static about a rollout (one compilation per plan and input shape)."""

    base: LlamaConfig
    guides: tuple  # ((LlamaConfig, AdapterConfig | None), ...)
    sampler: Sampler
    max_new_tokens: int
    eos_ids: tuple
    pad_id: int
    base_weight: float


def _step(model, variables, cache, tokens, mask, pref):
    logits, state = model.apply({**variables, "cache": cache}, tokens, mask, pref, last_only=True, mutable=["cache"])
    return logits[:, -1], state["cache"]


@functools.partial(jax.jit, static_argnames=("plan",))
def _rollout(base_params, guide_variables, ids, mask, pref, weights, rng, *, plan: _Plan):
    batch, prompt_len = ids.shape
    total = prompt_len + plan.max_new_tokens
    base = Llama(plan.base)
    guides = [Llama(cfg, acfg) for cfg, acfg in plan.guides]
    prefs = [pref if acfg is not None and acfg.takes_pref else None for _, acfg in plan.guides]

    base_last, base_cache = _step(base, {"params": base_params}, init_cache(plan.base, batch, total), ids, mask, None)
    arm_last, arm_caches = [], []
    for model, (cfg, _), variables, p in zip(guides, plan.guides, guide_variables, prefs):
        last, cache = _step(model, variables, init_cache(cfg, batch, total), ids, mask, p)
        arm_last.append(last)
        arm_caches.append(cache)
    eos = jnp.asarray(plan.eos_ids or (-1,), jnp.int32)
    ones = jnp.ones((batch, 1), jnp.int32)

    def cond(carry):
        return (carry["i"] < plan.max_new_tokens) & ~jnp.all(carry["done"])

    def body(carry):
        rng, key = jax.random.split(carry["rng"])
        logp = combine_logprobs(carry["base_last"], tuple(carry["arm_last"]), weights, plan.base_weight)
        token = jnp.where(carry["done"], plan.pad_id, choose_token(logp, key, plan.sampler))
        tokens = jax.lax.dynamic_update_slice(carry["tokens"], token[:, None], (0, carry["i"]))
        base_last, base_cache = _step(base, {"params": base_params}, carry["base_cache"], token[:, None], ones, None)
        arm_last, arm_caches = [], []
        for model, variables, cache, p in zip(guides, guide_variables, carry["arm_caches"], prefs):
            last, cache = _step(model, variables, cache, token[:, None], ones, p)
            arm_last.append(last)
            arm_caches.append(cache)
        return {"i": carry["i"] + 1, "tokens": tokens, "done": carry["done"] | jnp.isin(token, eos), "rng": rng,
                "base_last": base_last, "base_cache": base_cache, "arm_last": arm_last, "arm_caches": arm_caches}

    carry = {"i": jnp.zeros((), jnp.int32), "tokens": jnp.full((batch, plan.max_new_tokens), plan.pad_id, jnp.int32),
             "done": jnp.zeros((batch,), bool), "rng": rng, "base_last": base_last, "base_cache": base_cache,
             "arm_last": arm_last, "arm_caches": arm_caches}
    carry = jax.lax.while_loop(cond, body, carry)
    return carry["tokens"], carry["i"]


def conditioned_arms(guides: list) -> list:
    """The guides that take α as an input (PBLoRA, MoSLoRA ARMs)."""
    return [g for g in guides if g.adapter_config is not None and g.adapter_config.takes_pref]


def num_objectives(guides: list) -> int:
    """k as the guides define it: a conditioned ARM's own k, else one plain ARM per objective (GenARM)."""
    conditioned = conditioned_arms(guides)
    return conditioned[0].adapter_config.num_objectives if conditioned else len(guides)


def guide_weights(guides: list, pref: np.ndarray | None, arm_weights, batch: int) -> np.ndarray:
    """`[batch, n_guides]`: `arm_weight_i · α_i` for GenARM's plain ARMs (one per objective),
    `arm_weight_i` for a preference-conditioned ARM (α goes into the ARM instead)."""
    n = len(guides)
    arm_weights = np.ones(n, np.float32) if arm_weights is None else np.asarray(arm_weights, np.float32)
    if arm_weights.shape != (n,):
        raise ConfigError(f"{arm_weights.size} ARM weights for {n} ARMs; give one weight per ARM")
    weights = np.tile(arm_weights, (batch, 1))
    if pref is not None and n and not conditioned_arms(guides):
        weights = weights * pref  # pref was checked to have one weight per plain ARM
    return weights.astype(np.float32)


def guided_generate(base, guides: list, prompts: list[list[int]], max_new_tokens: int, *, pref=None,
                    arm_weights=None, base_weight: float = 1.0, sampler: Sampler = Sampler(), seed: int = 0,
                    pad_id: int | None = None, bucket: int = 32) -> tuple[list[list[int]], int]:
    """Token ids generated for each prompt (up to and including EOS) and the number of decode steps
    run. `base` and `guides` are model handles (a guide may carry an adapter); `pref` is one α per
    prompt (`[batch, k]`) or one for all (`[k]`). Everything is checked here, before compiling."""
    cfg = base.config
    if not prompts:
        raise ValueError("no prompts to generate from")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1; got {max_new_tokens}")
    batch = len(prompts)
    for g in guides:
        if g.config.vocab_size < cfg.vocab_size:
            raise ConfigError(f"an ARM has {g.config.vocab_size} tokens, fewer than the base's {cfg.vocab_size}; "
                              "the ARM must share the base's tokenizer")
    conditioned = conditioned_arms(guides)
    if conditioned:
        ks = {g.adapter_config.num_objectives for g in conditioned}
        if len(ks) > 1:
            raise ConfigError(f"preference-conditioned ARMs disagree on the number of objectives: {sorted(ks)}")
        if pref is None:
            raise ConfigError(f"the {conditioned[0].adapter_config.kind} ARM needs a preference vector of "
                              f"{ks.pop()} weights (pref)")
    pref_rows = None
    if pref is not None:
        pref_rows = check_pref(pref, num_objectives(guides), batch)
    weights = guide_weights(guides, pref_rows, arm_weights, batch)
    pad_id = pad_id if pad_id is not None else (cfg.pad_token_id if cfg.pad_token_id is not None else 0)
    # prompt lengths round up to a multiple of `bucket`, so nearby lengths share one compilation
    ids, mask = left_pad(prompts, bucket_length(max(len(p) for p in prompts), bucket, cfg.max_position_embeddings),
                         pad_id)
    if ids.shape[1] + max_new_tokens > cfg.max_position_embeddings:
        raise ConfigError(f"a prompt bucket of {ids.shape[1]} tokens + {max_new_tokens} new tokens exceeds the "
                          f"base's max_position_embeddings={cfg.max_position_embeddings}")

    plan = _Plan(cfg, tuple((g.config, g.adapter_config) for g in guides), sampler, int(max_new_tokens),
                 tuple(cfg.eos_token_ids), int(pad_id), float(base_weight))
    guide_variables = tuple({"params": g.params} if g.adapter is None else {"params": g.params, "adapter": g.adapter}
                            for g in guides)
    tokens, steps = _rollout(base.params, guide_variables, jnp.asarray(ids), jnp.asarray(mask),
                             None if pref_rows is None else jnp.asarray(pref_rows), jnp.asarray(weights),
                             jax.random.key(seed), plan=plan)
    out = []
    for row in np.asarray(tokens).tolist():
        ends = [i for i, t in enumerate(row) if t in cfg.eos_token_ids]
        out.append(row[: ends[0] + 1] if ends else row[: int(steps)])
    return out, int(steps)


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


def generate_ids(handle, prompts: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0, pad_id: int | None = None) -> list[list[int]]:
    """The base model alone: generated token ids per prompt, up to and including the first EOS."""
    return guided_generate(handle, [], prompts, max_new_tokens, sampler=Sampler(temperature), seed=seed,
                           pad_id=pad_id)[0]


def generate(handle, tokenizer, prompts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
             seed: int = 0, template: str = "chat") -> list[str]:
    """Text responses of the base model to `prompts`, framed by `template` as in training."""
    from uniarm_jax.tokenization import encode_prompts

    encoded = encode_prompts(tokenizer, prompts, template, max_new_tokens, handle.config.max_position_embeddings)
    out = generate_ids(handle, encoded, max_new_tokens, temperature, seed, pad_id=tokenizer.pad_token_id)
    return [tokenizer.decode(t, skip_special_tokens=True) for t in out]
