"""Model configuration: one dataclass read from (and written back to) a Hugging Face `config.json`.

Only Llama-family architectures are accepted (Llama, Mistral, Qwen2/2.5, Qwen3: `model/families.py`),
as switches of the one decoder. Anything this model cannot reproduce exactly (per-layer sliding
windows, unknown RoPE variants, other activations) is refused naming the field, so a checkpoint never
loads into a model that silently computes something else.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from uniarm_jax.errors import ConfigError, MissingFileError
from uniarm_jax.model.families import FAMILIES, family_of
from uniarm_jax.model.projections import NAMES
from uniarm_jax.model.quantize import check_quantize

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a Llama-family decoder, plus the dtype policy and remat switch."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # None, or a dict with "rope_type" in SUPPORTED_ROPE_TYPES and that type's fields (HF's names).
    rope_scaling: dict | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 2
    pad_token_id: int | None = None
    # The family (its config.json layout and transformers class) and its switches of the decoder.
    model_type: str = "llama"
    biases: tuple[str, ...] = ()       # the projections that carry a bias (Qwen2: q/k/v)
    sliding_window: int | None = None  # a query sees the keys less than this many positions back (Mistral)
    # dtype policy: weights are stored in `param_dtype`, matmuls run in `dtype`, softmax and the
    # final logits are float32.
    param_dtype: str = "float32"
    dtype: str = "float32"
    # "int8": the decoder's projection kernels are int8 with per-column scales (model/quantize.py)
    quantize: str | None = None
    # Recompute each decoder layer in the backward pass instead of keeping its activations.
    remat: bool = False

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}; grouped-query attention needs it")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {DTYPES}")
        check_quantize(self.quantize)
        _check_rope_scaling(self.rope_scaling)
        family = family_of(self.model_type)
        unknown = [b for b in self.biases if b not in NAMES]
        if unknown:
            raise ConfigError(f"biases names {unknown[0]!r}, which is no projection; expected some of {NAMES}")
        family.bias_fields(self.biases)
        if self.sliding_window is not None and not (family.sliding_window and self.sliding_window >= 1):
            raise ConfigError(f"sliding_window={self.sliding_window!r} is not supported for model_type="
                              f"{self.model_type!r}; expected null" + " or a positive window" * family.sliding_window)

    def __hash__(self):  # rope_scaling is a dict; the config must still key jit caches
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True))

    @property
    def qk_norm(self) -> bool:
        """RMSNorm over head_dim on every q and k head, before RoPE (Qwen3)."""
        return family_of(self.model_type).qk_norm

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def replace(self, **changes) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ Hugging Face config.json

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], source: str = "config.json", **overrides) -> "LlamaConfig":
        """Reads a transformers Llama, Mistral, Qwen2 or Qwen3 config (4.x or 5.x layout), refusing what we
        cannot reproduce."""
        try:
            family = family_of(hf.get("model_type"))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        window = hf.get("sliding_window")
        if family.window_switch:  # Qwen: the window applies only when switched on, to some layers
            if hf.get(family.window_switch):
                raise ConfigError(f"{source}: {family.window_switch}={hf[family.window_switch]!r} is not "
                                  "supported (per-layer sliding windows); expected false (full causal attention)")
            window = None
        layer_types = [t for t in hf.get("layer_types") or () if t != "full_attention"]
        if layer_types:
            raise ConfigError(f"{source}: layer_types holds {layer_types[0]!r}, which is not supported; "
                              "expected only 'full_attention' layers")
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act={act!r} is not supported; expected 'silu'")
        if quant := hf.get("quantization_config"):
            method = quant.get("quant_method") if isinstance(quant, dict) else quant
            raise ConfigError(f"{source}: quantization_config (quant_method={method!r}) is not supported: "
                              "pre-quantized checkpoints (GPTQ, AWQ, bitsandbytes) do not load; load the float "
                              "checkpoint with quantize='int8' (--quantize int8) instead")
        if hf.get("pretraining_tp", 1) not in (1, None):
            raise ConfigError(f"{source}: pretraining_tp={hf['pretraining_tp']!r} is not supported; expected 1")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in hf]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {missing}")

        # transformers 5 keeps rope_theta and the scaling under rope_parameters; 4.x at the top level,
        # with rope_scaling null (Llama-1/2) or a dict (Llama-3.x).
        rope_params = dict(hf.get("rope_parameters") or {})
        rope_theta = rope_params.pop("rope_theta", hf.get("rope_theta", 10000.0))
        scaling = hf.get("rope_scaling")
        if scaling is None and rope_params:
            scaling = rope_params
        scaling = _normalise_rope_scaling(scaling, source)

        heads = hf["num_attention_heads"]
        cfg = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            model_type=family.model_type,
            biases=family.biases_from_hf(hf),
            sliding_window=window,
        )
        cfg.update(overrides)
        try:
            return cls(**cfg)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_hf_dir(cls, hf_dir: str, **overrides) -> "LlamaConfig":
        path = os.path.join(hf_dir, "config.json")
        if not os.path.isdir(hf_dir):
            raise MissingFileError(f"model directory {hf_dir!r} does not exist")
        if not os.path.isfile(path):
            raise MissingFileError(f"{hf_dir!r} has no config.json; expected a Hugging Face model directory")
        with open(path) as f:
            try:
                hf = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_hf_dict(hf, source=path, **overrides)

    def to_hf_dict(self, biases=None) -> dict[str, Any]:
        """A config.json that the family's transformers class reads (4.x and 5.x). `biases`: the
        projections that carry one (default: the config's; a merged MoSLoRA shift adds some)."""
        family = FAMILIES[self.model_type]
        flags, _ = family.bias_fields(self.biases if biases is None else biases)
        hf = {
            "architectures": [family.architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            **flags,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.param_dtype,
        }
        if family.sliding_window or family.window_switch:
            hf["sliding_window"] = self.sliding_window
        if family.window_switch:
            hf[family.window_switch] = False
        return hf


def _normalise_rope_scaling(scaling: dict | None, source: str) -> dict | None:
    if not scaling:
        return None
    scaling = dict(scaling)
    scaling.pop("rope_theta", None)
    rope_type = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(f"{source}: rope_type={rope_type!r} is not supported; "
                          f"expected one of {SUPPORTED_ROPE_TYPES}")
    if rope_type == "default":
        return None
    scaling["rope_type"] = rope_type
    try:
        _check_rope_scaling(scaling)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return scaling


_ROPE_FIELDS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def _check_rope_scaling(scaling: dict | None) -> None:
    if scaling is None:
        return
    rope_type = scaling.get("rope_type")
    if rope_type not in _ROPE_FIELDS:
        raise ConfigError(f"rope_type={rope_type!r} is not supported; expected one of {SUPPORTED_ROPE_TYPES}")
    missing = [f for f in _ROPE_FIELDS[rope_type] if f not in scaling]
    if missing:
        raise ConfigError(f"rope_scaling of type {rope_type!r} lacks field(s) {missing}")
