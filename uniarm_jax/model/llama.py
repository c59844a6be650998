"""Flax Linen Llama: embeddings, RMSNorm, RoPE, grouped-query attention with a KV cache, SwiGLU MLP.
The Llama-family variants are switches of its config (docs/design.md §2): projection biases (Qwen2),
q/k norms per head (Qwen3), a sliding window (Mistral).

Variable collections (docs/design.md): `params` holds the frozen base weights, `adapter` an ARM's
adapter, `cache` a layer's KV cache. The full forward stacks the decoder layers with `nn.scan`, so
every per-layer weight has a leading `layers` axis and its compile time does not grow with depth (30
layers for SmolLM2, 80 for a 70B model); decoding runs the same `DecoderLayer` one layer at a time.

Padding and positions. Batches are left-padded; `attention_mask` marks real tokens. A token's RoPE
position is the number of real tokens before it in its row, so a left-padded row computes exactly what
the same row would without padding. The cache remembers, per row, which slots hold real tokens and how
many real tokens it has seen, so a prefill of a left-padded batch followed by one-token decode steps
reproduces the full forward.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.model import adapters
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.dropout import DROPOUT_MASK
from uniarm_jax.model.quantize import group_size, int8_dot

# A finite "minus infinity": a row whose keys are all masked (a padding query) softmaxes to a
# uniform distribution instead of NaN.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """Inverse frequencies of split-halves RoPE, with HF's none / linear / llama3 scaling (float32)."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    scaling = cfg.rope_scaling
    if scaling is None:
        pass
    elif scaling["rope_type"] == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif scaling["rope_type"] == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """x: [batch, length, heads, head_dim]; positions: [batch, length]. Rotation in float32."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [b, l, d/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


def _frozen(weight, frozen: bool):
    """Base weights under an adapter are constants: no gradient flows into them (or is computed)."""
    return jax.lax.stop_gradient(weight) if frozen else weight


class RMSNorm(nn.Module):
    cfg: LlamaConfig
    frozen: bool = False

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), jnp.dtype(self.cfg.param_dtype))
        weight = _frozen(weight, self.frozen)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
        dtype = jnp.dtype(self.cfg.dtype)
        return weight.astype(dtype) * x32.astype(dtype)


class Embedding(nn.Module):
    """The token embedding table `[vocab, embed]` (also the output head when embeddings are tied)."""

    cfg: LlamaConfig

    @nn.compact
    def __call__(self):
        return self.param("embedding", nn.initializers.normal(0.02), (self.cfg.vocab_size, self.cfg.hidden_size),
                          jnp.dtype(self.cfg.param_dtype))


class Linear(nn.Module):
    """A projection with a `[d_in, d_out]` kernel, computed in the config's compute dtype.

    If its name is an adapter target, the adapter's delta is added; its weights live in the `adapter`
    collection, so the frozen `params` never see them. A `bias` exists where the config says so (Qwen2's
    q/k/v) and in merged trees (MoSLoRA's shift at a fixed α). `quantized`: the kernel is int8
    `kernel_q` with a `scale` per group of input rows and column (model/quantize.py); the adapter is
    unchanged, in float.
    """

    features: int
    cfg: LlamaConfig
    adapter: AdapterConfig | None = None
    deterministic: bool = True
    frozen: bool = False
    quantized: bool = False

    @nn.compact
    def __call__(self, x, pref=None):
        d_in = x.shape[-1]
        dtype = jnp.dtype(self.cfg.dtype)
        x = x.astype(dtype)
        if self.quantized:
            kernel_q = self.param("kernel_q", nn.initializers.zeros, (d_in, self.features), jnp.int8)
            scale = self.param("scale", nn.initializers.ones, (d_in // group_size(d_in), self.features), jnp.float32)
            y = int8_dot(x, kernel_q, _frozen(scale, self.frozen), dtype)
        else:
            kernel = self.param("kernel", nn.initializers.normal(0.02), (d_in, self.features),
                                jnp.dtype(self.cfg.param_dtype))
            y = jnp.dot(x, _frozen(kernel, self.frozen).astype(dtype))
        if self.name in self.cfg.biases or self.has_variable("params", "bias"):
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.dtype(self.cfg.param_dtype))
            y = y + _frozen(bias, self.frozen).astype(dtype)
        acfg = self.adapter
        if acfg is not None and self.name in acfg.targets:
            weights = self.variable("adapter", acfg.kind,
                                    lambda: adapters.init(self.make_rng("adapter"), d_in, self.features, acfg))
            rng = None if self.deterministic or acfg.dropout == 0 else self.make_rng("dropout")
            y = y + adapters.apply(weights.value, x, pref, acfg, rng).astype(dtype)
        return y


class Block(nn.Module):
    """A part of a decoder layer: the config, the adapter injected into its projections, and whether
    adapter dropout is off. (Under an adapter the layers' base weights are frozen by `Llama`, once for
    the whole stack.)"""

    cfg: LlamaConfig
    adapter: AdapterConfig | None = None
    deterministic: bool = True

    def projection(self, features: int, name: str) -> Linear:
        return Linear(features, self.cfg, self.adapter, self.deterministic,
                      quantized=self.cfg.quantize is not None, name=name)


def write_chunk(cache, chunk, index, axis: int = 1):
    """`chunk` written into `cache` at slot `index` of its slots axis `axis` (rows are axis 0): one slot
    for every row (a batch decoded together), or one per row `[b]` (the server's slots, each at its own
    point)."""
    chunk = chunk.astype(cache.dtype)
    if jnp.ndim(index) == 0:
        return jax.lax.dynamic_update_slice(cache, chunk, tuple(index if a == axis else 0 for a in range(cache.ndim)))
    return jax.vmap(lambda c, x, i: jax.lax.dynamic_update_slice(
        c, x, tuple(i if a == axis - 1 else 0 for a in range(c.ndim))))(cache, chunk, index)


ATTENTION_BLOCK = 128  # queries per block of the full forward's attention (rows longer than one)


def attend(q, k, v, mask):
    """Softmax attention of queries grouped per kv head `q [b, l, kv, g, d]` over `k, v [b, kv, s, d]`
    where `mask [b, l, s]` allows; float32 scores. Written as two dots batched over (b, kv) with the
    l·g queries as rows, the form XLA:CPU runs fastest (1.2-2x an einsum keeping l and g apart, more at
    decode's l = 1; measured on the 2-core CPU, docs/design.md §5)."""
    b, length, kv, g, d = q.shape
    batched = ((0, 1), (0, 1))
    rows = q.transpose(0, 2, 1, 3, 4).reshape(b, kv, length * g, d)
    scores = jax.lax.dot_general(rows, k.astype(q.dtype), (((3,), (3,)), batched),
                                 preferred_element_type=jnp.float32) * (d ** -0.5)
    scores = jnp.where(mask[:, None, :, None, :], scores.reshape(b, kv, length, g, -1), MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(b, kv, length * g, -1)
    out = jax.lax.dot_general(probs, v, (((3,), (2,)), batched))
    return out.reshape(b, kv, length, g, d).transpose(0, 2, 1, 3, 4)


class Attention(Block):
    @nn.compact
    def __call__(self, x, positions, mask, cache_index, pref):
        cfg, proj = self.cfg, self.projection
        b, length, _ = x.shape
        h, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = proj(h * d, name="q_proj")(x, pref).reshape(b, length, h, d)
        k = proj(kv * d, name="k_proj")(x, pref).reshape(b, length, kv, d)
        v = proj(kv * d, name="v_proj")(x, pref).reshape(b, length, kv, d)
        if cfg.qk_norm:  # Qwen3: every head RMS-normalised over head_dim, before RoPE
            q = RMSNorm(cfg, name="q_norm")(q)
            k = RMSNorm(cfg, name="k_norm")(k)
        inv_freq = rope_inv_freq(cfg)
        q = apply_rope(q, positions, inv_freq)
        k = apply_rope(k, positions, inv_freq)

        # each kv head's positions contiguous `[b, kv, s, d]`, the layout attention's batched dots read:
        # a cache laid out `[b, s, kv, d]` made XLA transpose every layer's whole cache at every step
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
        if self.has_variable("cache", "k"):
            # Decode mode: write this chunk at slot `cache_index`, attend over the whole cache.
            k_cache = self.variable("cache", "k", lambda: None)
            v_cache = self.variable("cache", "v", lambda: None)
            k_cache.value = write_chunk(k_cache.value, k, cache_index, axis=2)
            v_cache.value = write_chunk(v_cache.value, v, cache_index, axis=2)
            k, v = k_cache.value, v_cache.value

        # Grouped-query attention without repeating k/v: queries grouped per kv head.
        q = q.reshape(b, length, kv, h // kv, d)
        if self.has_variable("cache", "k") or length <= ATTENTION_BLOCK:
            out = attend(q, k, v, mask)
        else:
            # The full forward's mask is causal: a block of queries sees no key past its last query,
            # so each block's scores leave those keys out (about half the work of a long row).
            blocks = [slice(start, start + ATTENTION_BLOCK) for start in range(0, length, ATTENTION_BLOCK)]
            out = jnp.concatenate([attend(q[:, s], k[:, :, :s.stop], v[:, :, :s.stop], mask[:, s, :s.stop])
                                   for s in blocks], axis=1)
        return proj(cfg.hidden_size, name="o_proj")(out.reshape(b, length, h * d), pref)


class MLP(Block):
    @nn.compact
    def __call__(self, x, pref):
        cfg, proj = self.cfg, self.projection
        gate = proj(cfg.intermediate_size, name="gate_proj")(x, pref)
        up = proj(cfg.intermediate_size, name="up_proj")(x, pref)
        return proj(cfg.hidden_size, name="down_proj")(nn.silu(gate) * up, pref)


class DecoderLayer(Block):
    @nn.compact
    def __call__(self, x, positions, mask, cache_index, pref):
        cfg, acfg, det = self.cfg, self.adapter, self.deterministic
        x = x + Attention(cfg, acfg, det, name="self_attn")(
            RMSNorm(cfg, name="input_layernorm")(x), positions, mask, cache_index, pref)
        x = x + MLP(cfg, acfg, det, name="mlp")(RMSNorm(cfg, name="post_attention_layernorm")(x), pref)
        return x, None


def positions_and_mask(attention_mask, segments=None, window: int | None = None):
    """The full forward's RoPE positions `[b, l]` and attention mask `[b, l, l]` of a padded batch.

    A query sees the real keys up to itself; with `segments`, a row packs a shared prompt (segment 0)
    and continuations of it (segments 1, 2, ...), and a continuation's query sees only the prompt and its
    own segment, so each continuation computes what it would in a row of its own. A token's position is
    the number of keys it sees before it: real tokens before it in a plain row, the prompt plus its
    own segment's earlier tokens in a packed one. With a sliding `window` (Mistral) a query sees only
    the keys less than `window` positions back; the term is left out where no two keys can be that far
    apart (a window at least the length)."""
    length = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    mask = causal[None] & attention_mask[:, None, :].astype(bool)
    if segments is not None:
        mask &= (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])
    positions = jnp.maximum(jnp.sum(mask, axis=-1, dtype=jnp.int32) - 1, 0)
    if window is not None and window < length:
        mask = mask & (positions[:, :, None] - positions[:, None, :] < window)
    return positions, mask


def cached_positions_and_mask(meta: dict, attention_mask, window: int | None = None):
    """The same for a chunk appended to a cache at slot `meta["index"]`: positions continue from the
    real tokens each row has seen, and queries see every real slot up to their own (and, with a
    `window`, less than `window` positions back: a slot's position is the real slots before it).
    Returns the positions, the mask `[b, l, slots]`, the slot the chunk starts at and the updated `meta`.

    `index` is one slot for every row (a batch decoded together), or one per row `[b]` (the server's
    decode slots, each at its own point, `decode/slots.py`); there a row whose chunk holds no real token
    (a free slot) does not move."""
    index, length = meta["index"], attention_mask.shape[1]
    valid = write_chunk(meta["valid"], attention_mask, index)
    positions = jnp.maximum(meta["seen"][:, None] + jnp.cumsum(attention_mask, axis=-1) - 1, 0)
    slots = jnp.arange(valid.shape[1])
    if jnp.ndim(index) == 0:
        query_slots = (index + jnp.arange(length))[None, :, None]
        moved = index + length
    else:
        query_slots = (index[:, None] + jnp.arange(length))[:, :, None]
        moved = index + length * (attention_mask.sum(-1) > 0)
    mask = valid[:, None, :].astype(bool) & (slots[None, None, :] <= query_slots)
    if window is not None and window < valid.shape[1]:
        key_positions = jnp.cumsum(valid, axis=-1, dtype=jnp.int32) - 1
        mask = mask & (positions[:, :, None] - key_positions[:, None, :] < window)
    meta = {"index": moved, "valid": valid, "seen": meta["seen"] + attention_mask.sum(-1)}
    return positions, mask, index, meta


def output_logits(cfg: LlamaConfig, x, embedding, lm_head=None):
    """Float32 logits from the final hidden states: the tied embedding's transpose, else `lm_head`."""
    logits = jnp.dot(x, embedding.T) if cfg.tie_word_embeddings else lm_head(x)
    return logits.astype(jnp.float32)


def head_logits(cfg: LlamaConfig, params: dict, x):
    """`output_logits` from the model's parameter tree, outside the module: decoding needs them only at
    the last position, the loss only where it scores a token."""
    embedding = params["embed_tokens"]["embedding"].astype(jnp.dtype(cfg.dtype))
    head = None if cfg.tie_word_embeddings else \
        (lambda h: Linear(cfg.vocab_size, cfg).apply({"params": params["lm_head"]}, h))
    return output_logits(cfg, x, embedding, head)


class Llama(nn.Module):
    """The causal LM's full forward: float32 logits `[batch, length, vocab]` (scoring, `uniarm_jax.logits`),
    or with `hidden_only` the final hidden states, whose logits the loss computes only where it scores a
    token (`head_logits`); `segments` packs a prompt with its continuations (`positions_and_mask`).
    Decoder layers are one `nn.scan`; decoding runs the same layers one by one over per-layer weights
    and caches instead (`decode/engine.py`, docs/design.md).

    With an `adapter` config, the targeted projections add that adapter's delta under the per-example
    preference vectors `pref` `[batch, k]` (a call argument, so one compiled graph serves every α).
    `deterministic=False` turns on adapter dropout (rng stream "dropout").
    """

    cfg: LlamaConfig
    adapter: AdapterConfig | None = None

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, pref=None, deterministic=True, segments=None,
                 hidden_only=False):
        cfg = self.cfg
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        positions, mask = positions_and_mask(attention_mask.astype(jnp.int32), segments, cfg.sliding_window)

        frozen = self.adapter is not None
        dtype = jnp.dtype(cfg.dtype)
        embedding = _frozen(Embedding(cfg, name="embed_tokens")(), frozen).astype(dtype)
        x = jnp.take(embedding, input_ids, axis=0)

        # The backward keeps each layer's projection outputs and adapter dropout masks (1 byte an
        # element: drawing a mask again costs more than reading it) and recomputes the rest (elementwise
        # ops and the attention scores, whose [length, length] per head would otherwise be kept for
        # every layer: memory then grows linearly with length); `remat` keeps only each layer's input.
        policy = None if cfg.remat else jax.checkpoint_policies.save_from_both_policies(
            jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
            jax.checkpoint_policies.save_only_these_names(DROPOUT_MASK))
        layer = nn.remat(DecoderLayer, prevent_cse=False, policy=policy)
        stack = nn.scan(layer, variable_axes={"params": 0, "adapter": 0},
                        split_rngs={"params": True, "adapter": True, "dropout": True},
                        in_axes=(nn.broadcast,) * 4, length=cfg.num_hidden_layers)
        if frozen:
            # The base weights' gradient stops once, on the stacked arrays outside the scan: a stop per
            # layer would make each layer's weight slice a new value that the backward keeps (a copy
            # of every weight), where a plain slice of the scanned input is read again instead.
            stack = nn.map_variables(stack, "params", lambda v: jax.tree.map(jax.lax.stop_gradient, v),
                                     init=self.is_initializing())
        x, _ = stack(cfg, self.adapter, deterministic, name="layers")(x, positions, mask, 0, pref)
        x = RMSNorm(cfg, frozen, name="norm")(x)
        if hidden_only and not self.is_initializing():
            return x
        lm_head = None if cfg.tie_word_embeddings else Linear(cfg.vocab_size, cfg, frozen=frozen, name="lm_head")
        return output_logits(cfg, x, embedding, lm_head)


def param_shapes(cfg: LlamaConfig) -> dict:
    """The parameter tree as `jax.ShapeDtypeStruct`s, without allocating any weight (a fresh tree each
    call, from one trace per configuration: the trace costs ~0.16 s, and loading a checkpoint asks twice)."""
    return jax.tree.map(lambda shape: shape, _traced_param_shapes(cfg))


@functools.lru_cache(maxsize=16)
def _traced_param_shapes(cfg: LlamaConfig) -> dict:
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.eval_shape(Llama(cfg).init, jax.random.key(0), ids)["params"]


def count_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
