"""One model's cached forward for decoding, with its weights and KV cache laid out per layer.

Why per layer (docs/design.md §5): a decode step reads every weight once and writes one cache slot. With
the layer stack as an `nn.scan`, XLA:CPU slices each layer's weights out of the stacked `[layers, ...]`
arrays into temporaries at every step (a third of the bandwidth of reading separate arrays), and the
scan's stacked cache output made XLA copy the whole cache several times per token. Here every layer's
weights are their own arrays, made once per model (`decode_weights`), every layer's K and V are their
own buffers in the loop carry, updated in place with one `dynamic_update_slice`, and the layers run one
after another through the very `DecoderLayer` module of the full forward (so both compute the same
thing; the tests check it against the full forward). Each layer is its own small jitted function,
so the rollout traces one layer per model, not every layer (XLA inlines it when the rollout compiles).
A prompt into an empty cache may instead scan the stacked weights (`scan_layers`): compute-bound, it
gains nothing from the per-layer layout, and one layer compiles and loads faster than every layer.
"""

from __future__ import annotations

import functools
import weakref

import jax
import jax.numpy as jnp

from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.llama import DecoderLayer, RMSNorm, cached_positions_and_mask, head_logits

# id of a stacked leaf -> that tree laid out per layer; dropped with the tree
_LAYOUTS: dict[int, tuple] = {}


def split_layers(tree: dict | None, num_layers: int) -> tuple | None:
    """The layer-stacked tree `{"layers": {...: [L, ...]}}` as one tree per layer (separate arrays),
    made once per tree: a base and the ARMs on it share one layout of the base's weights."""
    if tree is None:
        return None
    stacked = jax.tree.leaves(tree["layers"])[0]  # the layout holds its slices, never it: it may die
    key = id(stacked)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = _unstack(tree["layers"], num_layers)
        weakref.finalize(stacked, _LAYOUTS.pop, key, None)
    return _LAYOUTS[key]


@functools.partial(jax.jit, static_argnums=1)
def _unstack(layers: dict, num_layers: int) -> tuple:
    """One compiled program (not one per slice) whose outputs are separate per-layer buffers."""
    return tuple(jax.tree.map(lambda x, i=i: x[i], layers) for i in range(num_layers))


def decode_weights(handle) -> dict:
    """`handle`'s weights laid out for decoding: the top-level weights, and per layer its weights and
    its adapter's. The per-layer copies are weights-sized (the stacked tree stays the handle's, for the
    full forward, training and the scanned prefill, under "stacked")."""
    n = handle.config.num_hidden_layers
    return {"top": {k: v for k, v in handle.params.items() if k != "layers"},
            "layers": split_layers(handle.params, n), "adapter": split_layers(handle.adapter, n),
            "stacked": {"layers": handle.params["layers"],
                        "adapter": None if handle.adapter is None else handle.adapter["layers"]}}


def init_cache(cfg: LlamaConfig, batch: int, max_len: int, dtype=None, row_index: bool = False) -> dict:
    """An empty KV cache for `batch` rows of up to `max_len` tokens (prompt + generated): per layer its
    own K and V `[batch, kv_heads, max_len, head_dim]`, plus what every layer shares. `row_index`: each
    row has its own next slot (the server's rows join and leave at different steps)."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
    return {
        "index": jnp.zeros((batch,) if row_index else (), jnp.int32),  # next slot to write (shared, or per row)
        "valid": jnp.zeros((batch, max_len), jnp.int8),  # which slots hold real tokens, per row
        "seen": jnp.zeros((batch,), jnp.int32),          # real tokens so far, per row (next position)
        "layers": tuple({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
                        for _ in range(cfg.num_hidden_layers)),
    }


@functools.partial(jax.jit, static_argnums=(0, 1))
def _layer(cfg, acfg, params, adapter, cache, x, positions, mask, index, pref):
    """One decoder layer on its weights and cache. A function of its own, so that the rollout traces
    one layer per model shape, not every layer (it is inlined when the rollout compiles)."""
    variables = {"params": params, "cache": {"self_attn": cache}}
    if adapter is not None:
        variables["adapter"] = adapter
    (x, _), state = DecoderLayer(cfg, acfg).apply(variables, x, positions, mask, index, pref, mutable=["cache"])
    return x, state["cache"]["self_attn"]


def forward(cfg: LlamaConfig, acfg, weights: dict, cache: dict, input_ids, attention_mask, pref=None,
            scan_layers: bool = False):
    """Appends a chunk (the left-padded prompt, or one token per row) to `cache` and returns the float32
    logits of each row's last position `[batch, vocab]` and the new cache.

    `scan_layers`, for a prompt into an empty cache: the layers run as one `scan` over the stacked
    weights instead of one after another. A prompt's matmuls are compute-bound, so the scan's weight
    slices cost nothing measurable, and the compiled program holds one layer instead of every layer
    (the rollout's compile and its load from the persistent cache take about half as long). Inside the
    scan each layer attends over the prompt's own slots (the empty rest is masked out anyway); the
    prompt's K and V come out stacked and are written into the first slots of the per-layer buffers
    that decode steps update in place (memory: the cache plus the prompt's part of it, once)."""
    meta = {k: cache[k] for k in ("index", "valid", "seen")}
    positions, mask, index, meta = cached_positions_and_mask(meta, attention_mask.astype(jnp.int32),
                                                              cfg.sliding_window)
    top, dtype = weights["top"], jnp.dtype(cfg.dtype)
    x = jnp.take(top["embed_tokens"]["embedding"].astype(dtype), input_ids, axis=0)
    if scan_layers:
        length = input_ids.shape[1]
        empty = {name: jnp.zeros_like(buffer[:, :, :length]) for name, buffer in cache["layers"][0].items()}

        def layer(x, stacked):
            return _layer(cfg, acfg, *stacked, empty, x, positions, mask[..., :length], 0, pref)

        x, prompt = jax.lax.scan(layer, x, (weights["stacked"]["layers"], weights["stacked"]["adapter"]))
        layers = tuple({name: jax.lax.dynamic_update_slice(buffers[name], prompt[name][i], (0, 0, index, 0))
                        for name in ("k", "v")} for i, buffers in enumerate(cache["layers"]))
    else:
        layers = []
        for i, params in enumerate(weights["layers"]):
            adapter = None if weights["adapter"] is None else weights["adapter"][i]
            x, layer_cache = _layer(cfg, acfg, params, adapter, cache["layers"][i], x, positions, mask, index, pref)
            layers.append(layer_cache)
    x = RMSNorm(cfg).apply({"params": top["norm"]}, x[:, -1:])  # only the next token's logits are needed
    return head_logits(cfg, top, x)[:, 0], {**meta, "layers": tuple(layers)}
