"""ARM objectives: response log-probs and the GenARM, PARM and UniARM losses (docs/methods.md §1-3).

Every loss is written against a `logprob_fn(rows, pref) -> [N, 2]` that returns the summed log-prob of
both responses of each packed row (data/batches.py: the prompt once, then both responses), so the
objectives know nothing of the model and the tests can check them against numpy on the same log-probs.
A batch holds B preference pairs; besides the packed rows (`ROW_KEYS`):

    labels   [B, k]     int32   index of the preferred response per objective
    scores   [B, 2, k]  float32 per-objective scores, NaN where absent

Choices of this project (docs/methods.md leaves them open), each switchable in `ObjectiveConfig`:
- UniARM's global term draws one α per *example* (PARM, as its reference code, one per micro-batch).
- The second UniARM reading ("weighted_vote") uses β_glob = Σ_i α_i β_i for its global term.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from uniarm_jax import defaults
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.llama import head_logits

METHODS = ("genarm", "parm", "uniarm", "distil")
READINGS = ("dim_global", "weighted_vote")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Which objective and its constants. `betas` holds β_i per objective (length k)."""

    method: str = "uniarm"
    betas: tuple[float, ...] = (defaults.BETA, defaults.BETA)
    objective: int = 0              # GenARM: which objective this ARM learns
    concentration: float = 0.5      # Dirichlet(c · 1_k) for the sampled α
    lambda_dim: float = 1.0         # UniARM weights of the per-dimension and global terms
    lambda_glob: float = 1.0
    reading: str = "dim_global"     # UniARM: "dim_global" (default, docs/results.md) or "weighted_vote"
    teacher: str | None = None      # distil: a Hugging Face model directory to match token by token (KL)
    anchor: float = 0.0             # λ of the KL anchor to the base, per unit of pair loss (objective_loss)

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.method not in METHODS:
            raise ConfigError(f"objective method {self.method!r} is not one of {METHODS}")
        if self.reading not in READINGS:
            raise ConfigError(f"UniARM loss reading {self.reading!r} is not one of {READINGS}")
        if not self.betas or any(b <= 0 for b in self.betas):
            raise ConfigError(f"betas {list(self.betas)} must be positive, one per objective")
        if not 0 <= self.objective < len(self.betas):
            raise ConfigError(f"objective index {self.objective} is outside the {len(self.betas)} objectives")
        if self.teacher is not None and self.method != "distil":
            raise ConfigError(f"objective.teacher is read by method 'distil' only; method is {self.method!r}")
        if self.anchor < 0:
            raise ConfigError(f"objective.anchor={self.anchor}; expected a weight of at least 0")
        if self.anchor and self.method == "distil":
            raise ConfigError("objective.anchor is read by the pair losses (genarm, parm, uniarm); distil has none")
        if self.concentration <= 0:
            raise ConfigError(f"Dirichlet concentration must be positive; got {self.concentration}")

    @property
    def num_objectives(self) -> int:
        return len(self.betas)

    @property
    def pair_loss_weight(self) -> float:
        """How many one-objective Bradley–Terry losses the pair loss adds up: UniARM's L_dim and L_glob
        are each that size (weighted by λ_dim, λ_glob), GenARM's and PARM's loss is one. The anchor is
        scaled by it, so one λ holds every method to its base equally hard."""
        return self.lambda_dim + self.lambda_glob if self.method == "uniarm" else 1.0


# ------------------------------------------------------------------------------------- log-probs

ROW_KEYS = ("input_ids", "segments", "target_ids", "target_from", "target_mask")
# scored positions per row whose float32 logits are held at once (about 32 MiB a row)
SCORE_CHUNK_ELEMENTS = 2**23


def _over_scored(fn, vocab_size: int, *xs):
    """`fn(*xs)` on arrays `[N, S, ...]` of scored positions, a chunk of positions at a time under
    `jax.checkpoint` when there are many, so the `[.., vocabulary]` logits `fn` makes are held for one
    chunk only: memory grows with the tokens scored, never with tokens × vocabulary. `fn` returns
    `[N, chunk]` arrays (or a tuple of them)."""
    n, s = xs[0].shape[:2]
    chunk = max(16, 2 ** int(math.log2(max(1, SCORE_CHUNK_ELEMENTS // vocab_size))))
    if s <= chunk:
        return fn(*xs)
    pad = -s % chunk

    def chunks(x):  # [N, S, ...] -> [S / chunk, N, chunk, ...]
        x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
        return jnp.swapaxes(x.reshape(n, -1, chunk, *x.shape[2:]), 0, 1)

    out = jax.lax.map(jax.checkpoint(lambda c: fn(*c)), tuple(chunks(x) for x in xs))
    return jax.tree.map(lambda o: jnp.swapaxes(o, 0, 1).reshape(n, -1)[:, :s], out)


def scored_logprobs(cfg, params: dict, hidden: jax.Array, target_from: jax.Array, target_ids: jax.Array):
    """`[N, S]` float32: log p(target_ids[n, s]) under the logits of the hidden state at
    `target_from[n, s]`. The head runs only on the scored positions (`_over_scored`)."""
    def logprobs(h, ids):
        logits = head_logits(cfg, params, h)
        return jnp.take_along_axis(logits, ids[..., None], axis=-1)[..., 0] - jax.nn.logsumexp(logits, axis=-1)

    h = jnp.take_along_axis(hidden, target_from[..., None], axis=1)  # [N, S, D]
    return _over_scored(logprobs, cfg.vocab_size, h, target_ids)


def scored_distillation(cfg, params: dict, hidden, teacher_cfg, teacher_params: dict, teacher_hidden,
                        target_from, target_ids):
    """`([N, S], [N, S])` float32: the student's log p(target_ids[n, s]) as `scored_logprobs`, and
    KL(teacher ‖ student) of the two next-token distributions at each scored position (the teacher is
    not differentiated)."""
    def distil(h, th, ids):
        student = jax.nn.log_softmax(head_logits(cfg, params, h), axis=-1)
        teacher = jax.lax.stop_gradient(jax.nn.log_softmax(head_logits(teacher_cfg, teacher_params, th), axis=-1))
        kl = jnp.sum(jnp.exp(teacher) * (teacher - student), axis=-1)
        return jnp.take_along_axis(student, ids[..., None], axis=-1)[..., 0], kl

    def gather(x):
        return jnp.take_along_axis(x, target_from[..., None], axis=1)

    return _over_scored(distil, cfg.vocab_size, gather(hidden), gather(teacher_hidden), target_ids)


def _hidden(model, variables: dict, rows: dict, pref, deterministic: bool, rngs):
    segments = rows["segments"]
    return model.apply(variables, rows["input_ids"], segments >= 0, pref, deterministic, segments=segments,
                       hidden_only=True, rngs=rngs)


def _per_response(values: jax.Array, rows: dict) -> jax.Array:
    """`[N, 2 R]` values of the scored positions -> `[N, 2]` sums over each response's tokens."""
    n, two, r = rows["target_ids"].shape
    return jnp.sum(values.reshape(n, two, r) * rows["target_mask"].astype(jnp.float32), axis=-1)


def _targets(rows: dict):
    n, two, r = rows["target_ids"].shape
    return rows["target_from"].reshape(n, two * r), rows["target_ids"].reshape(n, two * r)


def model_logprob_fn(model, variables: dict, deterministic: bool = True, dropout_rng=None):
    """A `logprob_fn` running a Flax Llama (with or without adapter) over packed rows."""
    rngs = None if deterministic else {"dropout": dropout_rng}

    def logprob_fn(rows, pref):
        hidden = _hidden(model, variables, rows, pref, deterministic, rngs)
        return _per_response(scored_logprobs(model.cfg, variables["params"], hidden, *_targets(rows)), rows)
    return logprob_fn


def model_distil_fn(model, variables: dict, teacher, teacher_params: dict, deterministic: bool = True,
                    dropout_rng=None):
    """For `distil` with a teacher: `fn(rows, None) -> (log-probs [N, 2], KL sums [N, 2])` of both
    responses of each packed row, the student `model` (with its adapter) against the frozen `teacher`
    model (the same vocabulary) on the same rows."""
    rngs = None if deterministic else {"dropout": dropout_rng}

    def distil_fn(rows, pref):
        hidden = _hidden(model, variables, rows, pref, deterministic, rngs)
        teacher_hidden = jax.lax.stop_gradient(_hidden(teacher, {"params": teacher_params}, rows, None, True, None))
        lp, kl = scored_distillation(model.cfg, variables["params"], hidden, teacher.cfg, teacher_params,
                                     teacher_hidden, *_targets(rows))
        return _per_response(lp, rows), _per_response(kl, rows)
    return distil_fn


def pair_logprobs(logprob_fn, batch: dict, prefs: jax.Array | None) -> jax.Array:
    """Log-probs `[C, B, 2]` of both responses under C stacked conditionings `prefs [C, B, k]` (one
    forward for all of them), or `[1, B, 2]` without preferences. The copies of a pair are adjacent
    rows (pair-major), so rows sharded by pair stay on their device: no collective moves the batch."""
    b = batch["labels"].shape[0]
    copies = 1 if prefs is None else prefs.shape[0]

    def rows(x):
        return jnp.broadcast_to(x[:, None], (b, copies) + x.shape[1:]).reshape((b * copies,) + x.shape[1:])

    pref_rows = None if prefs is None else jnp.swapaxes(prefs, 0, 1).reshape(b * copies, prefs.shape[-1])
    lp = logprob_fn({k: rows(batch[k]) for k in ROW_KEYS}, pref_rows).reshape(b, copies, 2)
    return jnp.swapaxes(lp, 0, 1)


# ----------------------------------------------------------------------------------- the pieces

def preferred_margins(lp: jax.Array, labels: jax.Array) -> jax.Array:
    """`[B, k]`: ℓ_{w_i} − ℓ_{1−w_i}, the preferred minus the other response's log-prob, per objective."""
    diff = lp[:, 0] - lp[:, 1]
    return jnp.where(labels == 0, diff[:, None], -diff[:, None])


def bradley_terry(margin: jax.Array, beta) -> jax.Array:
    """−log σ(β · margin), elementwise."""
    return -jax.nn.log_sigmoid(beta * margin)


def sample_dirichlet(rng, concentration: float, k: int, shape=()) -> jax.Array:
    return jax.random.dirichlet(rng, jnp.full((k,), concentration, jnp.float32), shape)


def _metrics(margins: jax.Array, betas: jax.Array) -> dict:
    """Implied-reward accuracy and margin β_i (ℓ_w − ℓ_l) per objective, `[k]` each."""
    return {"accuracy": jnp.mean(margins > 0, axis=0), "margin": jnp.mean(betas * margins, axis=0)}


# --------------------------------------------------------------------------------- the objectives

def genarm_loss(logprob_fn, batch: dict, rng, cfg: ObjectiveConfig):
    """GenARM: one ARM per objective, Bradley–Terry on its labels, DPO without a reference model."""
    del rng
    betas = jnp.asarray(cfg.betas)
    margins = preferred_margins(pair_logprobs(logprob_fn, batch, None)[0], batch["labels"])
    loss = jnp.mean(bradley_terry(margins[:, cfg.objective], betas[cfg.objective]))
    return loss, _metrics(margins, betas)


def parm_loss(logprob_fn, batch: dict, rng, cfg: ObjectiveConfig):
    """PARM: one α ~ Dirichlet per micro-batch, both responses under α, total Σ_i α_i L_i(α)."""
    b, k = batch["labels"].shape
    betas = jnp.asarray(cfg.betas)
    alpha = sample_dirichlet(rng, cfg.concentration, k)
    lp = pair_logprobs(logprob_fn, batch, jnp.broadcast_to(alpha, (1, b, k)))[0]
    margins = preferred_margins(lp, batch["labels"])
    per_objective = jnp.mean(bradley_terry(margins, betas), axis=0)  # L_i(α), [k]
    return jnp.sum(alpha * per_objective), _metrics(margins, betas)


def uniarm_loss(logprob_fn, batch: dict, rng, cfg: ObjectiveConfig):
    """UniARM, this project's formulation (docs/methods.md §3), in one of two readings.

    dim_global:    L_dim = (1/k) Σ_i L_i(e_i);  L_glob = Σ_i α_i L_i(α),  α ~ Dirichlet per example.
                   The k one-hot conditionings and α stack into one forward of (k+1)·2B rows.
    weighted_vote: per-dimension Σ_i α_i L_i(α); global Bradley–Terry whose winner has the larger
                   α-weighted score (scores where the row has them all, else the α-weighted vote of
                   the labels; ties dropped), with β = Σ_i α_i β_i. One forward of 2B rows.
    """
    b, k = batch["labels"].shape
    betas = jnp.asarray(cfg.betas)
    alpha = sample_dirichlet(rng, cfg.concentration, k, (b,))  # [B, k]

    if cfg.reading == "dim_global":
        onehots = jnp.broadcast_to(jnp.eye(k)[:, None, :], (k, b, k))
        lp = pair_logprobs(logprob_fn, batch, jnp.concatenate([onehots, alpha[None]], axis=0))
        margins_dim = jax.vmap(preferred_margins, in_axes=(0, None))(lp[:k], batch["labels"])  # [k, B, k]
        own = jnp.stack([margins_dim[i, :, i] for i in range(k)], axis=-1)                   # [B, k]
        l_dim = jnp.mean(bradley_terry(own, betas))
        margins = preferred_margins(lp[k], batch["labels"])
        l_glob = jnp.mean(jnp.sum(alpha * bradley_terry(margins, betas), axis=-1))
        loss = cfg.lambda_dim * l_dim + cfg.lambda_glob * l_glob
        return loss, _metrics(own, betas) | {"loss_dim": l_dim, "loss_glob": l_glob}

    lp = pair_logprobs(logprob_fn, batch, alpha[None])[0]
    margins = preferred_margins(lp, batch["labels"])
    l_dim = jnp.mean(jnp.sum(alpha * bradley_terry(margins, betas), axis=-1))
    winner, keep = weighted_winner(batch["labels"], batch["scores"], alpha)
    diff = lp[:, 0] - lp[:, 1]
    margin_glob = jnp.where(winner == 0, diff, -diff)
    beta_glob = alpha @ betas
    l_glob = jnp.sum(keep * bradley_terry(margin_glob, beta_glob)) / jnp.maximum(jnp.sum(keep), 1.0)
    loss = cfg.lambda_dim * l_dim + cfg.lambda_glob * l_glob
    return loss, _metrics(margins, betas) | {"loss_dim": l_dim, "loss_glob": l_glob}


def weighted_winner(labels: jax.Array, scores: jax.Array, alpha: jax.Array):
    """`(winner [B] int32, keep [B] float32)`: the response with the larger α-weighted score (or vote)."""
    has_scores = jnp.all(jnp.isfinite(scores), axis=(1, 2))
    score = jnp.einsum("bjk,bk->bj", jnp.where(jnp.isfinite(scores), scores, 0.0), alpha)
    votes = jnp.stack([jnp.sum(alpha * (labels == j), axis=-1) for j in (0, 1)], axis=-1)
    value = jnp.where(has_scores[:, None], score, votes)
    winner = (value[:, 1] > value[:, 0]).astype(jnp.int32)
    keep = (value[:, 0] != value[:, 1]).astype(jnp.float32)
    return winner, keep


def distil_loss(logprob_fn, batch: dict, rng, cfg: ObjectiveConfig):
    """Distillation on both responses of every pair, which are the full model's own samples
    (make-data's pairs), so that a truncated weak ARM base learns to write what the full model writes
    (docs/methods.md §6). Without a teacher (sequence-level): the mean negative log-prob per response
    token. With `cfg.teacher` (token-level; `logprob_fn` is then `model_distil_fn`'s): the mean KL from
    the teacher's next-token distribution per response token. Labels are not read. `nats_per_token`
    is the held-out base text's negative log-prob per token either way (the dev set's)."""
    del rng
    rows = {k: batch[k] for k in ROW_KEYS}
    tokens = jnp.maximum(jnp.sum(batch["target_mask"].astype(jnp.float32)), 1.0)
    if cfg.teacher is None:
        nats = -jnp.sum(logprob_fn(rows, None)) / tokens
        return nats, {"nats_per_token": nats}
    lp, kl = logprob_fn(rows, None)
    loss = jnp.sum(kl) / tokens
    return loss, {"nats_per_token": -jnp.sum(lp) / tokens, "kl_per_token": loss}


OBJECTIVES = {"genarm": genarm_loss, "parm": parm_loss, "uniarm": uniarm_loss, "distil": distil_loss}


def objective_loss(logprob_fn, batch: dict, rng, cfg: ObjectiveConfig):
    """`(loss, metrics)` of the configured method, plus `cfg.anchor` × `cfg.pair_loss_weight` × the mean
    negative log-prob per response token of every response the method scored (`nll_per_token`, always
    reported).

    The pair losses are DPO without a reference model: nothing holds the ARM's likelihood where it
    was, and a token both responses of a pair share (the EOS that ends them) drifts freely; the
    study's ARMs put EOS 24 nats below the base where its answers end (docs/results.md). When the
    responses are the base's own samples (make-data's pairs) the NLL term estimates KL(π_base ‖ π_ARM)
    up to a constant: a reference-model anchor at no extra forward."""
    if cfg.method == "distil":
        return distil_loss(logprob_fn, batch, rng, cfg)
    scored = []

    def recording(rows, pref):
        lp = logprob_fn(rows, pref)
        scored.append((jnp.sum(lp), jnp.sum(rows["target_mask"].astype(jnp.float32))))
        return lp

    loss, metrics = OBJECTIVES[cfg.method](recording, batch, rng, cfg)
    nll = -sum(lp for lp, _ in scored) / jnp.maximum(sum(n for _, n in scored), 1.0)
    return loss + cfg.anchor * cfg.pair_loss_weight * nll, metrics | {"nll_per_token": nll}
