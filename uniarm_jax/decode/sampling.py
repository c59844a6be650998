"""How the next token is chosen: the base's and the ARMs' log-probs combined under the weights, then
greedy or top-k / top-p sampling (docs/methods.md §1)."""

from __future__ import annotations

import dataclasses

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
