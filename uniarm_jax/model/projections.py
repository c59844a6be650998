"""The one table of the Llama's projections: where each sits, what Hugging Face calls it, and the
logical axes of its kernel. Adapters (which projections they may target), checkpoints (HF names),
sharding (logical axes) and exports (PEFT names, merged biases) all read it from here.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Projection:
    name: str     # the module name, also an adapter target: "q_proj"
    group: str    # the decoder sub-block holding it: "self_attn" or "mlp"
    d_in: str     # logical axis of the kernel's input dimension
    d_out: str    # logical axis of the kernel's output dimension

    @property
    def path(self) -> str:
        """Its place in our (layer-stacked) parameter tree, without the leaf name."""
        return f"layers/{self.group}/{self.name}"

    def hf_module(self, layer: int) -> str:
        """Its module name in a Hugging Face Llama, without `.weight` / `.bias`."""
        return f"model.layers.{layer}.{self.group}.{self.name}"


PROJECTIONS = (
    Projection("q_proj", "self_attn", "embed", "heads"),
    Projection("k_proj", "self_attn", "embed", "kv_heads"),
    Projection("v_proj", "self_attn", "embed", "kv_heads"),
    Projection("o_proj", "self_attn", "heads", "embed"),
    Projection("gate_proj", "mlp", "embed", "mlp"),
    Projection("up_proj", "mlp", "embed", "mlp"),
    Projection("down_proj", "mlp", "mlp", "embed"),
)
BY_NAME = {p.name: p for p in PROJECTIONS}
NAMES = tuple(BY_NAME)
# The config.json flag that says a group's projections carry biases (merged MoSLoRA exports only).
BIAS_FLAGS = {"self_attn": "attention_bias", "mlp": "mlp_bias"}
