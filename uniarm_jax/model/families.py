"""The Llama-family architectures one model computes: what each family's `config.json` says and which
transformers class loads it back.

The families differ only in a few switches of the same decoder (docs/design.md §2), so they are rows of
a table read by `LlamaConfig`, not subclasses of the model: which projections carry a bias and which
config.json flag says so, whether q and k are RMS-normalised per head, whether `sliding_window` is
honoured or only switched on by `use_sliding_window` (Qwen's per-layer windows, refused).
"""

from __future__ import annotations

import dataclasses

from uniarm_jax.errors import ConfigError
from uniarm_jax.model.projections import BIAS_FLAGS, PROJECTIONS

# config.json bias flag -> the projections it gives a bias (a whole decoder sub-block)
_GROUP_BIASES = {flag: tuple(p.name for p in PROJECTIONS if p.group == group) for group, flag in BIAS_FLAGS.items()}
_QKV = ("q_proj", "k_proj", "v_proj")


@dataclasses.dataclass(frozen=True)
class Family:
    model_type: str
    architecture: str                  # the transformers class that loads the checkpoint
    bias_flags: tuple[str, ...] = ()   # config.json flags (of _GROUP_BIASES) that switch biases on
    fixed_biases: tuple[str, ...] = ()  # projections that always carry one
    qk_norm: bool = False              # RMSNorm over head_dim on each q and k head, before RoPE
    sliding_window: bool = False       # `sliding_window` (a window over every layer) is honoured
    window_switch: str | None = None   # the flag that turns per-layer windows on (refused when true)

    def biases_from_hf(self, hf: dict) -> tuple[str, ...]:
        on = set(self.fixed_biases).union(*(_GROUP_BIASES[f] for f in self.bias_flags if hf.get(f)))
        return tuple(p.name for p in PROJECTIONS if p.name in on)

    def bias_fields(self, biased) -> tuple[dict, tuple[str, ...]]:
        """The config.json flags for projections `biased`, and every projection that then has a bias in
        the checkpoint (a flag covers its whole sub-block: the rest are written as zeros). Refuses a bias
        this family's class cannot hold."""
        biased = set(biased)
        flags = {f: bool(biased & set(_GROUP_BIASES[f])) for f in self.bias_flags}
        covered = set(self.fixed_biases).union(*(_GROUP_BIASES[f] for f, on in flags.items() if on))
        extra = [p.name for p in PROJECTIONS if p.name in biased - covered]
        if extra:
            raise ConfigError(f"{self.architecture} has no bias on {extra[0]}; a {self.model_type!r} checkpoint "
                              "cannot hold one (export the ARM as PEFT, where a shift is lora_bias)")
        return flags, tuple(p.name for p in PROJECTIONS if p.name in covered)


FAMILIES = {f.model_type: f for f in (
    Family("llama", "LlamaForCausalLM", bias_flags=("attention_bias", "mlp_bias")),
    Family("mistral", "MistralForCausalLM", sliding_window=True),
    Family("qwen2", "Qwen2ForCausalLM", fixed_biases=_QKV, window_switch="use_sliding_window"),
    Family("qwen3", "Qwen3ForCausalLM", bias_flags=("attention_bias",), qk_norm=True,
           window_switch="use_sliding_window"),
)}


def family_of(model_type) -> Family:
    if model_type not in FAMILIES:
        raise ConfigError(f"model_type={model_type!r} is not supported; expected one of {tuple(FAMILIES)} "
                          "(a Llama-family model)")
    return FAMILIES[model_type]
