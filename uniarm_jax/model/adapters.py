"""Low-rank adapters as pure functions: LoRA (GenARM), PBLoRA (PARM) and MoSLoRA (UniARM).

Each kind is `init(rng, d_in, d_out, cfg) -> params` and `apply(params, x, pref, cfg, dropout_rng) ->
delta`, where `x` is `[batch, length, d_in]`, `pref` the per-example preference vectors `[batch, k]`
(None for LoRA), and `delta` is added to the frozen projection `x @ W0`. Every kind is computed as a
chain of small matmuls; `ΔW` is never materialised (except by `delta_weight`, for merging at one α).

MoSLoRA is this project's reading of the UniARM paper, whose equations are not public (docs/methods.md §3):

    z = dropout(x) A                       A: [d_in, r]      shared, preference-agnostic features
    u = z S                                S: [r, r]         shared core (`shared_core=False` drops it)
    γ(α) = 1 + α G,   β(α) = α H           G, H: [k, r]      preference modulation, linear in α
    or, under conditioning="mlp", one small MLP per adapted projection:
    (γ(α) − 1, β(α)) = SiLU(α C1 + c1) C2 + c2   C1: [k, 16], C2: [16, 2r] (r under "scale")
    ũ = γ(α) ⊙ u + β(α)                                      affine ("scale_shift"); "scale" drops β
    Δ = s ũ B                              B: [r, d_out],    s = lora_alpha / r

With G = H = 0 (C2 = c2 = 0) and B = 0 at initialisation it starts as plain LoRA with Δ = 0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax import defaults
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.dropout import dropout
from uniarm_jax.model.preferences import check_pref
from uniarm_jax.model.projections import NAMES as TARGETS

KINDS = ("lora", "pblora", "moslora")
MODULATIONS = ("scale_shift", "scale")
# the parameters α acts through (MoSLoRA's modulation G, H or its conditioning MLP; PBLoRA's θ2): the
# ones `optim.preference_lr_ratio` speeds up
PREFERENCE_PARAMS = frozenset({"G", "H", "C1", "c1", "C2", "c2", "theta2"})
CONDITIONINGS = ("linear", "mlp")
MLP_HIDDEN = 16  # the conditioning MLP's width: k -> 16 -> 2r per adapted projection


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """Which adapter, where, and its sizes. Defaults follow docs/methods.md for each kind."""

    kind: str = "moslora"
    targets: tuple[str, ...] = defaults.ADAPTER_TARGETS
    rank: int = defaults.ADAPTER_RANK  # LoRA / MoSLoRA rank r; PBLoRA: r1 + r2 (split by rank_shared)
    rank_shared: int | None = None  # PBLoRA r1 (default rank // 2); r2 = rank - r1
    lora_alpha: float | None = None  # default 2 * rank (LoRA/MoSLoRA), 2 * r2 (PBLoRA): s = 2
    dropout: float = defaults.ADAPTER_DROPOUT
    num_objectives: int = 2       # k; LoRA ignores it
    shared_core: bool = True      # MoSLoRA: the shared r x r core S
    modulation: str = "scale_shift"  # MoSLoRA: "scale_shift" (γ ⊙ u + β) or "scale" (γ ⊙ u)
    conditioning: str = "linear"  # MoSLoRA: α -> (γ, β) "linear" (1 + αG, αH) or "mlp" (a small MLP)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"adapter kind {self.kind!r} is not one of {KINDS}")
        targets = tuple(self.targets)
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not targets:
            raise ConfigError(f"adapter target(s) {unknown or targets!r} unknown; valid targets are {TARGETS}")
        object.__setattr__(self, "targets", targets)
        if self.rank <= 0:
            raise ConfigError(f"adapter rank must be positive; got {self.rank}")
        if self.kind == "pblora":
            r1 = self.rank_shared if self.rank_shared is not None else self.rank // 2
            if not 0 < r1 < self.rank:
                raise ConfigError(f"PBLoRA splits rank={self.rank} into shared r1={r1} and preference r2="
                                  f"{self.rank - r1}; both must be at least 1")
        if self.num_objectives < 1:
            raise ConfigError(f"num_objectives must be at least 1; got {self.num_objectives}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"adapter dropout must be in [0, 1); got {self.dropout}")
        if self.modulation not in MODULATIONS:
            raise ConfigError(f"MoSLoRA modulation {self.modulation!r} is not one of {MODULATIONS}")
        if self.conditioning not in CONDITIONINGS:
            raise ConfigError(f"MoSLoRA conditioning {self.conditioning!r} is not one of {CONDITIONINGS}")

    @property
    def ranks(self) -> tuple[int, int]:
        """PBLoRA's (r1, r2)."""
        r1 = self.rank_shared if self.rank_shared is not None else self.rank // 2
        return r1, self.rank - r1

    @property
    def scale(self) -> float:
        """s = lora_alpha / r; PBLoRA divides by r2, as the reference does."""
        r = self.ranks[1] if self.kind == "pblora" else self.rank
        alpha = self.lora_alpha if self.lora_alpha is not None else 2.0 * r
        return alpha / r

    @property
    def takes_pref(self) -> bool:
        return self.kind != "lora"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> "AdapterConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"unknown adapter config field(s) {unknown}; valid fields are {sorted(fields)}")
        return cls(**{**d, "targets": tuple(d.get("targets", cls.targets))})


def checked_pref(acfg: AdapterConfig | None, pref, batch: int | None = None):
    """The one check of "this adapter needs a preference / takes none": `pref` as float32 `[batch, k]`
    for a PBLoRA or MoSLoRA adapter (a single `[k]` broadcast to `batch` rows), None otherwise."""
    if acfg is None or not acfg.takes_pref:
        if pref is not None:
            raise ConfigError("pref was given, but this model has no preference-conditioned adapter (a plain "
                              "model or a LoRA adapter takes none)")
        return None
    if pref is None:
        raise ConfigError(f"a {acfg.kind} adapter needs a preference vector of {acfg.num_objectives} weights "
                          "(pref: one per row, or one for every row)")
    return check_pref(pref, acfg.num_objectives, batch)


def _uniform(rng, shape, fan_in):
    """PyTorch's kaiming_uniform(a=√5): uniform in ±1/√fan_in."""
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(rng, shape, jnp.float32, -bound, bound)


# ---------------------------------------------------------------------------------------------- LoRA

def lora_init(rng, d_in, d_out, cfg):
    return {"A": _uniform(rng, (d_in, cfg.rank), d_in), "B": jnp.zeros((cfg.rank, d_out), jnp.float32)}


def lora_apply(p, x, pref, cfg, dropout_rng=None):
    z = dropout(x, cfg.dropout, dropout_rng) @ p["A"].astype(x.dtype)
    return cfg.scale * (z @ p["B"].astype(x.dtype))


# -------------------------------------------------------------------------------------------- PBLoRA

def pblora_init(rng, d_in, d_out, cfg):
    r1, r2 = cfg.ranks
    k = jax.random.split(rng, 4)
    return {
        "A1": _uniform(k[0], (d_in, r1), d_in), "W1": _uniform(k[1], (r1, r1), r1),
        "B1": jnp.zeros((r1, d_out), jnp.float32),
        "A2": _uniform(k[2], (d_in, r2), d_in), "theta2": _uniform(k[3], (cfg.num_objectives, r2 * r2), r2 * r2),
        "B2": jnp.zeros((r2, d_out), jnp.float32),
    }


def pblora_apply(p, x, pref, cfg, dropout_rng=None):
    r2 = cfg.ranks[1]
    x = dropout(x, cfg.dropout, dropout_rng)
    dt = x.dtype
    shared = (x @ p["A1"].astype(dt)) @ p["W1"].astype(dt) @ p["B1"].astype(dt)
    w2 = (pref.astype(jnp.float32) @ p["theta2"]).reshape(-1, r2, r2).astype(dt)  # [batch, r2, r2]
    pref_part = jnp.einsum("blr,brs->bls", x @ p["A2"].astype(dt), w2) @ p["B2"].astype(dt)
    return cfg.scale * (shared + pref_part)


# ------------------------------------------------------------------------------------------- MoSLoRA

def moslora_init(rng, d_in, d_out, cfg):
    k = jax.random.split(rng, 2)
    p = {"A": _uniform(k[0], (d_in, cfg.rank), d_in), "B": jnp.zeros((cfg.rank, d_out), jnp.float32)}
    if cfg.shared_core:
        p["S"] = _uniform(k[1], (cfg.rank, cfg.rank), cfg.rank)
    shift = cfg.modulation == "scale_shift"
    if cfg.conditioning == "mlp":  # hidden layer random, output zero: γ = 1, β = 0 at init, as linear's
        n_out = (2 if shift else 1) * cfg.rank
        m = jax.random.split(jax.random.fold_in(rng, 1), 2)  # A's and S's draws stay those of "linear"
        p |= {"C1": _uniform(m[0], (cfg.num_objectives, MLP_HIDDEN), cfg.num_objectives),
              "c1": _uniform(m[1], (MLP_HIDDEN,), cfg.num_objectives),
              "C2": jnp.zeros((MLP_HIDDEN, n_out), jnp.float32), "c2": jnp.zeros((n_out,), jnp.float32)}
        return p
    p["G"] = jnp.zeros((cfg.num_objectives, cfg.rank), jnp.float32)
    if shift:
        p["H"] = jnp.zeros((cfg.num_objectives, cfg.rank), jnp.float32)
    return p


def moslora_modulation(p, pref, cfg):
    """γ(α) and β(α) (β None under "scale"), float32 `[batch, r]`."""
    pref = pref.astype(jnp.float32)
    if cfg.conditioning == "mlp":
        out = jax.nn.silu(pref @ p["C1"] + p["c1"]) @ p["C2"] + p["c2"]
        r = cfg.rank
        return 1.0 + out[:, :r], (out[:, r:] if cfg.modulation == "scale_shift" else None)
    gamma = 1.0 + pref @ p["G"]
    beta = pref @ p["H"] if "H" in p else None
    return gamma, beta


def moslora_apply(p, x, pref, cfg, dropout_rng=None):
    dt = x.dtype
    u = dropout(x, cfg.dropout, dropout_rng) @ p["A"].astype(dt)
    if "S" in p:
        u = u @ p["S"].astype(dt)
    gamma, beta = moslora_modulation(p, pref, cfg)
    u = u * gamma[:, None, :].astype(dt)
    if beta is not None:
        u = u + beta[:, None, :].astype(dt)
    return cfg.scale * (u @ p["B"].astype(dt))


_FUNCTIONS = {"lora": (lora_init, lora_apply), "pblora": (pblora_init, pblora_apply),
              "moslora": (moslora_init, moslora_apply)}


def init(rng, d_in: int, d_out: int, cfg: AdapterConfig) -> dict:
    return _FUNCTIONS[cfg.kind][0](rng, d_in, d_out, cfg)


def apply(params: dict, x, pref, cfg: AdapterConfig, dropout_rng=None):
    return _FUNCTIONS[cfg.kind][1](params, x, pref, cfg, dropout_rng)


# ------------------------------------------------------------------------------- one fixed α: merge

def low_rank_factors(p: dict, pref, cfg: AdapterConfig):
    """`(L, R, bias)` with `Δ(x) = x L R + bias` exactly, at one preference vector `pref` `[k]`.

    `L` is `[d_in, r']` and `R` `[r', d_out]` (r' ≤ r), so `s ΔW = L R`; `bias` is the input-independent
    MoSLoRA shift `s β(α) B` (None for the other kinds and under "scale")."""
    s = cfg.scale
    if cfg.kind == "lora":
        return p["A"], s * p["B"], None
    pref = jnp.asarray(pref, jnp.float32)[None]
    if cfg.kind == "pblora":
        r2 = cfg.ranks[1]
        w2 = (pref @ p["theta2"]).reshape(r2, r2)
        left = jnp.concatenate([p["A1"] @ p["W1"], p["A2"] @ w2], axis=1)
        return left, s * jnp.concatenate([p["B1"], p["B2"]], axis=0), None
    gamma, beta = moslora_modulation(p, pref, cfg)
    left = p["A"] @ p["S"] if "S" in p else p["A"]
    bias = None if beta is None else (s * beta @ p["B"])[0]
    return left * gamma, s * p["B"], bias


def delta_weight(p: dict, pref, cfg: AdapterConfig):
    """`(ΔW [d_in, d_out], bias [d_out] or None)` at one fixed α, for merging into the frozen kernel."""
    left, right, bias = low_rank_factors(p, pref, cfg)
    return left @ right, bias

