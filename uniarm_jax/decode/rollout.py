"""Guided decoding: the frozen base and its ARM(s) score every next token; the scores are combined under
the preference vector α and one token is chosen. The whole rollout is one compiled function.

    log π_dec(v) = w_base · log_softmax(base)[v] + Σ_i w_i · log_softmax(arm_i)[v]   (− log Z)

- GenARM: k plain ARMs (LoRA or full fine-tunes), `w_i = arm_weight_i · α_i`.
- PARM / UniARM: one preference-conditioned ARM run under the row's α, `w = arm_weight` (default 1).
- base only: no guides; ARM only: `base_weight = 0`.
An ARM's logits are cut to the base vocabulary (Alpaca's 32001 tokens vs Llama's 32000).

The loop: prefill the base and every ARM on the left-padded prompt batch and choose the first token,
then a `lax.while_loop` whose step reads the previous token into every model and chooses the next (no
forward after the last token) until every row has emitted EOS (or `max_new_tokens`), its carry holding
the tokens, done flags, rng and every model's KV cache. Each model runs through `engine.forward` on its
weights laid out per layer; the caches (one K and one V buffer per layer) are created inside the
compiled function and each step writes one slot of each in place (a test reads the compiled program for
cache-sized copies); they never travel to the host. α, weights, prompts and the seed are arguments: a
change of preference or of prompt within a length bucket never recompiles.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.data.batches import bucket_length
from uniarm_jax.decode import engine
from uniarm_jax.decode.sampling import Sampler, choose_token, combine_logprobs
from uniarm_jax.decode.slots import BUCKET
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.adapters import checked_pref
from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.preferences import check_pref


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


@functools.partial(jax.jit, static_argnames=("plan",))
def _rollout(base_weights, guide_weights, ids, mask, pref, weights, rng, *, plan: _Plan):
    batch, prompt_len = ids.shape
    total = prompt_len + plan.max_new_tokens
    models = [(plan.base, None, base_weights, None)] + [
        (cfg, acfg, w, pref if acfg is not None and acfg.takes_pref else None)
        for (cfg, acfg), w in zip(plan.guides, guide_weights)]

    def step(caches, tokens, token_mask, scan_layers=False):
        """Every model (the base first) appends `tokens` to its cache: `(last logits, caches)`."""
        out = [engine.forward(cfg, acfg, w, cache, tokens, token_mask, p, scan_layers)
               for (cfg, acfg, w, p), cache in zip(models, caches)]
        return [o[0] for o in out], [o[1] for o in out]

    # the prompt: the layers scanned (engine.forward's scan_layers), the steps below unrolled
    last, caches = step([engine.init_cache(cfg, batch, total) for cfg, *_ in models], ids, mask, scan_layers=True)
    eos = jnp.asarray(plan.eos_ids or (-1,), jnp.int32)
    ones = jnp.ones((batch, 1), jnp.int32)

    def choose(carry, last):
        """Token `i` of every row from its models' last logits (pad once the row is done)."""
        rng, key = jax.random.split(carry["rng"])
        logp = combine_logprobs(last[0], tuple(last[1:]), weights, plan.base_weight)
        token = jnp.where(carry["done"], plan.pad_id, choose_token(logp, key, plan.sampler))
        return dict(carry, i=carry["i"] + 1, rng=rng, done=carry["done"] | jnp.isin(token, eos),
                    tokens=jax.lax.dynamic_update_slice(carry["tokens"], token[:, None], (0, carry["i"])))

    def cond(carry):
        return (carry["i"] < plan.max_new_tokens) & ~jnp.all(carry["done"])

    def body(carry):
        # the models read the previous token only when another one is wanted: no forward after the last
        token = jax.lax.dynamic_slice_in_dim(carry["tokens"], carry["i"] - 1, 1, axis=1)
        last, caches = step(carry["caches"], token, ones)
        return choose(dict(carry, caches=caches), last)

    carry = {"i": jnp.zeros((), jnp.int32), "tokens": jnp.full((batch, plan.max_new_tokens), plan.pad_id, jnp.int32),
             "done": jnp.zeros((batch,), bool), "rng": rng, "caches": caches}
    carry = jax.lax.while_loop(cond, body, choose(carry, last))
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


def checked_rows(base, guides: list, prompts: list[list[int]], max_new_tokens: int, pref, arm_weights,
                 pad_id: int | None) -> tuple[np.ndarray | None, np.ndarray, int]:
    """`guided_generate`'s input checks; returns each row's α (`[batch, k]` or None), each row's guide
    weights `[batch, n_guides]` and the pad id."""
    cfg = base.config
    if not prompts:
        raise ConfigError("no prompts to generate from")
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
        pref_rows = checked_pref(conditioned[0].adapter_config, pref, batch)
    else:  # GenARM: α weighs the plain ARMs, one weight each (or no α: every ARM at its arm weight)
        pref_rows = None if pref is None else check_pref(pref, len(guides), batch)
    weights = guide_weights(guides, pref_rows, arm_weights, batch)
    pad_id = pad_id if pad_id is not None else (cfg.pad_token_id if cfg.pad_token_id is not None else 0)
    return pref_rows, weights, int(pad_id)


def guided_generate(base, guides: list, prompts: list[list[int]], max_new_tokens: int, *, pref=None,
                    arm_weights=None, base_weight: float = 1.0, sampler: Sampler = Sampler(), seed: int = 0,
                    pad_id: int | None = None, bucket: int = BUCKET) -> tuple[list[list[int]], int]:
    """Token ids generated for each prompt (up to and including EOS) and the number of tokens chosen
    per row (the longest answer's length: one prefill and that many - 1 decode steps). `base` and
    `guides` are model handles (a guide may carry an adapter); `pref` is one α per prompt (`[batch, k]`)
    or one for all (`[k]`). Everything is checked here, before compiling."""
    cfg = base.config
    pref_rows, weights, pad_id = checked_rows(base, guides, prompts, max_new_tokens, pref, arm_weights, pad_id)
    # prompt lengths round up to a multiple of `bucket`, so nearby lengths share one compilation
    ids, mask = left_pad(prompts, bucket_length(max(len(p) for p in prompts), bucket, cfg.max_position_embeddings),
                         pad_id)
    if ids.shape[1] + max_new_tokens > cfg.max_position_embeddings:
        raise ConfigError(f"a prompt bucket of {ids.shape[1]} tokens + {max_new_tokens} new tokens exceeds the "
                          f"base's max_position_embeddings={cfg.max_position_embeddings}")

    plan = _Plan(cfg, tuple((g.config, g.adapter_config) for g in guides), sampler, int(max_new_tokens),
                 tuple(cfg.eos_token_ids), int(pad_id), float(base_weight))
    tokens, steps = _rollout(engine.decode_weights(base), tuple(engine.decode_weights(g) for g in guides),
                             jnp.asarray(ids), jnp.asarray(mask),
                             None if pref_rows is None else jnp.asarray(pref_rows), jnp.asarray(weights),
                             jax.random.key(seed), plan=plan)
    out = []
    for row in np.asarray(tokens).tolist():
        ends = [i for i, t in enumerate(row) if t in cfg.eos_token_ids]
        out.append(row[: ends[0] + 1] if ends else row[: int(steps)])
    return out, int(steps)


