"""How the next token is chosen: the base's and the ARMs' log-probs combined under the weights, then
greedy or top-k / top-p sampling (docs/methods.md §1)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from uniarm_jax import defaults
from uniarm_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How a token is chosen from the combined log-probs: greedy at temperature 0."""

    temperature: float = defaults.TEMPERATURE
    top_k: int = defaults.TOP_K
    top_p: float = defaults.TOP_P

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 is greedy); got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 turns it off); got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1]; got {self.top_p}")


def combine_logprobs(base_logits, arm_logits: tuple, weights, base_weight: float):
    """`[batch, vocab_base]` unnormalised log π_dec from float32 logits; `weights` is `[batch, n_arms]`."""
    vocab = base_logits.shape[-1]
    out = base_weight * jax.nn.log_softmax(base_logits, axis=-1)
    for i, logits in enumerate(arm_logits):
        out = out + weights[:, i:i + 1] * jax.nn.log_softmax(logits[:, :vocab], axis=-1)
    return out


def _top_k(logits, k: int):
    kth = jax.lax.top_k(logits, k)[0][:, -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def _top_p(logits, p):
    """Only the smallest set of top tokens whose mass reaches `p` (a number or `[batch, 1]`) survives:
    token i stays iff the tokens more probable than it hold less than `p`. That set is every token at
    or above a probability threshold, found without sorting the vocabulary: the least float32 v whose
    "mass above v" is below `p`, by bisection over the bit patterns of [0, 1] (31 halvings, exact), each
    a masked sum over the vocabulary. A sort of the vocabulary per row cost ~20x this on a CPU (550 vs
    25 ms a step at batch 32 over 49152 tokens): more than the model's own step."""
    probs = jax.nn.softmax(logits, axis=-1)

    def mass_above(bits):
        v = jax.lax.bitcast_convert_type(bits, jnp.float32)
        return jnp.sum(jnp.where(probs > v, probs, 0.0), axis=-1, keepdims=True)

    def halve(_, bounds):  # mass_above(lo) >= p > mass_above(hi) throughout
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        below = mass_above(mid) < p
        return jnp.where(below, lo, mid), jnp.where(below, mid, hi)

    start = (jnp.zeros(probs.shape[:-1] + (1,), jnp.int32), jnp.full(probs.shape[:-1] + (1,), 0x3F800000, jnp.int32))
    _, hi = jax.lax.fori_loop(0, 31, halve, start)  # 2^30 < 0x3F800000 < 2^31
    return jnp.where(probs >= jax.lax.bitcast_convert_type(hi, jnp.float32), logits, -jnp.inf)


def choose_token(logp, rng, sampler: Sampler):
    """Greedy at temperature 0; else top-k / top-p filtering, then a sample of softmax(logp / T)."""
    if sampler.temperature == 0:
        return jnp.argmax(logp, axis=-1).astype(jnp.int32)
    logits = logp / sampler.temperature
    if sampler.top_k:
        logits = _top_k(logits, sampler.top_k)
    if sampler.top_p < 1:
        logits = _top_p(logits, sampler.top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def choose_token_rows(logp, keys, temperature, top_p, top_k: int = 0):
    """`choose_token` with each row's own temperature `[batch]` (0: greedy), top_p `[batch]` and rng key
    `[batch]` (the server's rows are different requests). Each row's token is the one `choose_token`
    picks for that row alone with the same key and values: the row runs as a batch of one under `vmap`,
    which keeps each key's random stream. Sampling and the nucleus cut are computed only when some row
    asks for them."""
    def one(lp, key, t, p, nucleus: bool):
        lp = lp[None]
        logits = lp / jnp.where(t > 0, t, 1)
        if top_k:
            logits = _top_k(logits, top_k)
        if nucleus:
            logits = jnp.where(p < 1, _top_p(logits, p), logits)  # top_p = 1 cuts nothing, as choose_token
        sampled = jax.random.categorical(key, logits, axis=-1)
        return jnp.where(t > 0, sampled, jnp.argmax(lp, axis=-1))[0].astype(jnp.int32)

    def sample(nucleus: bool):
        return lambda: jax.vmap(functools.partial(one, nucleus=nucleus))(logp, keys, temperature, top_p)

    def greedy():
        return jnp.argmax(logp, axis=-1).astype(jnp.int32)

    return jax.lax.cond(jnp.any(temperature > 0),
                        lambda: jax.lax.cond(jnp.any(top_p < 1), sample(True), sample(False)), greedy)
