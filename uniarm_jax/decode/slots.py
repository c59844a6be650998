"""The server's decode slots on the device: a fixed batch of rows, each a request of its own.

How the slots map onto the compiled decode step (docs/design.md §5, "Serving"): the batch dimension of
one compiled step *is* the slots. Every model (the base first, then each ARM) keeps one cache of
`slots` rows × `length` positions (`engine.init_cache(..., row_index=True)`: each row has its own write
index, so a row that joins late writes at its own point while the others go on), plus the last logits
of every row and one rng key per row. `step` runs every model once for the first `width` rows (the
narrowest power of two holding every live row: rows are taken lowest first, so a lightly loaded
server runs narrow matmuls), each row with its own α, base and guide weights, temperature, top-p and
key; `join` prefills one request (its prompt left-padded to a 16-token bucket, in a cache of its own)
and writes its K/V, last logits and key into one row, at a step boundary. A free row still runs (its
token masked out: its cache does not move), so shapes never change: one step program per width
(log2(slots) + 1), one join program per prompt bucket. The state is donated to both, so the caches
are updated in place and never leave the device.

A row's tokens are those of `guided_generate` for that request alone: the same prefill, the same
left-aligned cache positions, the same combination and choice (`choose_token_rows` keeps each row's
key stream, so even sampled tokens match an offline run with the request's seed).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.decode import engine
from uniarm_jax.decode.sampling import choose_token_rows, combine_logprobs
from uniarm_jax.model.config import LlamaConfig

# prompt lengths round up to multiples of this (one program per bucket), offline and in the server; a
# prefill is compute-bound, so padding costs its share: 16 rows of 35-41 tokens prefilled in 1.25-1.40 s
# at 48 tokens, 1.65 s at 32's 64 (SmolLM2 + a 6-layer ARM, 2-core CPU)
BUCKET = 16


@dataclasses.dataclass(frozen=True)
class SlotPlan:
    """Everything static about the slots (one step program per plan and width)."""

    base: LlamaConfig
    guides: tuple  # ((LlamaConfig, AdapterConfig | None), ...)
    slots: int
    length: int  # cache positions per row: the longest prompt bucket + the most new tokens
    top_k: int
    pad_id: int


def _models(plan: SlotPlan, base_weights, guide_weights, pref):
    """(config, adapter config, weights, α or None) of every model, the base first."""
    return [(plan.base, None, base_weights, None)] + [
        (cfg, acfg, w, pref if acfg is not None and acfg.takes_pref else None)
        for (cfg, acfg), w in zip(plan.guides, guide_weights)]


@functools.partial(jax.jit, static_argnames=("plan",))
def init_state(*, plan: SlotPlan) -> dict:
    configs = [plan.base] + [cfg for cfg, _ in plan.guides]
    return {"caches": tuple(engine.init_cache(cfg, plan.slots, plan.length, row_index=True) for cfg in configs),
            "last": tuple(jnp.zeros((plan.slots, cfg.vocab_size), jnp.float32) for cfg in configs),
            "keys": jnp.zeros((plan.slots, *jax.random.key_data(jax.random.key(0)).shape), jnp.uint32)}


@functools.partial(jax.jit, static_argnames=("plan",), donate_argnames=("state",))
def join(base_weights, guide_weights, state, ids, mask, slot, key, pref, *, plan: SlotPlan) -> dict:
    """Prefills one request (`ids`, `mask` `[1, bucket]`, left-padded) in every model and makes it row
    `slot`: its K/V at positions `[0, bucket)` (what was there after them is masked out), its last
    logits, its rng key data `key`. `pref` is its α `[1, k]` (None without a conditioned ARM)."""
    bucket = ids.shape[1]
    caches, last = [], []
    for (cfg, acfg, w, p), cache, prev in zip(_models(plan, base_weights, guide_weights, pref), state["caches"],
                                              state["last"]):
        logits, fresh = engine.forward(cfg, acfg, w, engine.init_cache(cfg, 1, bucket), ids, mask, p)
        layers = tuple({n: jax.lax.dynamic_update_slice(old[n], new[n], (slot, 0, 0, 0)) for n in ("k", "v")}
                       for old, new in zip(cache["layers"], fresh["layers"]))
        valid = jnp.zeros((1, plan.length), cache["valid"].dtype).at[:, :bucket].set(fresh["valid"])
        caches.append({"index": cache["index"].at[slot].set(bucket),
                       "valid": jax.lax.dynamic_update_slice(cache["valid"], valid, (slot, 0)),
                       "seen": cache["seen"].at[slot].set(fresh["seen"][0]), "layers": layers})
        last.append(prev.at[slot].set(logits[0]))
    return {"caches": tuple(caches), "last": tuple(last), "keys": state["keys"].at[slot].set(key)}


@functools.partial(jax.jit, static_argnames=("plan", "width"), donate_argnames=("state",))
def step(base_weights, guide_weights, state, rows, *, plan: SlotPlan, width: int):
    """One token for each of the first `width` rows (`rows` holds their settings). Returns the tokens
    `[width]` and the new state.

    Rows past `width` are all free (rows are taken lowest first): a narrower step runs its matmuls on
    fewer rows, at the cost of copying those rows' caches out and back in (the full width copies none)."""
    if width == plan.slots:
        return _step_rows(base_weights, guide_weights, state, rows, plan)
    token, part = _step_rows(base_weights, guide_weights, jax.tree.map(lambda x: x[:width], state), rows, plan)
    return token, jax.tree.map(lambda full, x: jax.lax.dynamic_update_slice(full, x, (0,) * x.ndim), state, part)


def _step_rows(base_weights, guide_weights, state, rows, plan: SlotPlan):
    """Every row of `state` once: combine its last log-probs under its weights, choose under its
    sampler and key, append the token to every model's cache (a free row, `rows["live"]` false,
    appends a masked token and does not move)."""
    keys = jax.vmap(jax.random.split)(jax.random.wrap_key_data(state["keys"]))  # [rows, 2]: as rollout's split
    logp = combine_logprobs(state["last"][0], tuple(state["last"][1:]), rows["weights"], rows["base_weight"][:, None])
    token = choose_token_rows(logp, keys[:, 1], rows["temperature"], rows["top_p"], plan.top_k)
    token = jnp.where(rows["live"], token, plan.pad_id)
    mask = rows["live"][:, None].astype(jnp.int32)
    out = [engine.forward(cfg, acfg, w, cache, token[:, None], mask, p)
           for (cfg, acfg, w, p), cache in zip(_models(plan, base_weights, guide_weights, rows.get("pref")),
                                               state["caches"])]
    return token, {"caches": tuple(o[1] for o in out), "last": tuple(o[0] for o in out),
                   "keys": jax.random.key_data(keys[:, 0])}


def widths(slots: int) -> tuple[int, ...]:
    """The step widths compiled: powers of two below `slots`, then `slots`."""
    return tuple(w for w in (1 << i for i in range(slots.bit_length())) if w < slots) + (slots,)


class DecodeSlots:
    """The slots' device state and the per-row settings beside it (small host arrays sent with every
    step). Used by one thread only, the scheduler's."""

    def __init__(self, plan: SlotPlan, base_weights, guide_weights: tuple, num_objectives: int | None, mesh=None):
        self.plan, self.base_weights, self.guide_weights, self.mesh = plan, base_weights, guide_weights, mesh
        s = plan.slots
        self.rows = {"live": np.zeros(s, bool), "base_weight": np.ones(s, np.float32),
                     "weights": np.zeros((s, len(plan.guides)), np.float32),
                     "temperature": np.zeros(s, np.float32), "top_p": np.ones(s, np.float32)}
        if num_objectives is not None:  # a conditioned ARM takes each row's α
            self.rows["pref"] = np.full((s, num_objectives), 1 / num_objectives, np.float32)
        self.reset()

    def join(self, slot: int, ids: np.ndarray, mask: np.ndarray, *, seed: int, base_weight: float, weights, pref,
             temperature: float, top_p: float) -> None:
        """Row `slot` becomes this request (`ids`, `mask` `[1, bucket]`); `pref` its α or None."""
        key = jax.random.key_data(jax.random.key(seed))
        pref_row = None if "pref" not in self.rows else jnp.asarray(np.asarray(pref, np.float32)[None])
        self.state = join(self.base_weights, self.guide_weights, self.state, jnp.asarray(ids), jnp.asarray(mask),
                          jnp.int32(slot), key, pref_row, plan=self.plan)
        self.rows["live"][slot] = True
        self.rows["base_weight"][slot], self.rows["weights"][slot] = base_weight, weights
        self.rows["temperature"][slot], self.rows["top_p"][slot] = temperature, top_p
        if pref_row is not None:
            self.rows["pref"][slot] = pref

    def free(self, slot: int) -> None:
        self.rows["live"][slot] = False

    def reset(self) -> None:
        """Every row free and a fresh state (after a failed call, whose donated state may be gone). With
        the models sharded over a mesh, the state lives on the same devices, replicated."""
        self.state = init_state(plan=self.plan)
        if self.mesh is not None:
            replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
            self.state = jax.device_put(self.state, replicated)
        self.rows["live"][:] = False

    def width(self) -> int:
        """The narrowest compiled width that holds every live row."""
        live = np.flatnonzero(self.rows["live"])
        top = int(live[-1]) + 1 if live.size else 1
        return next(w for w in widths(self.plan.slots) if w >= top)

    def step(self, width: int | None = None) -> np.ndarray:
        """One decode step of the first `width` rows (default: every live one); their tokens (a free
        row's is the pad id)."""
        width = width or self.width()
        tokens, self.state = step(self.base_weights, self.guide_weights, self.state,
                                  {k: jnp.asarray(v[:width]) for k, v in self.rows.items()}, plan=self.plan,
                                  width=width)
        return np.asarray(tokens)
