"""An ARM for the PyTorch ecosystem: a PEFT LoRA directory, or a Hugging Face directory with the
adapter merged at one α (`uniarm export`)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from uniarm_jax.hf.checkpoints import export_hf
from uniarm_jax.hf.safetensors import save_safetensors
from uniarm_jax.model import adapters
from uniarm_jax.model.arm import adapted, merge_adapter, single_pref


def export_peft(handle, out_dir: str, pref=None) -> None:
    """A PEFT LoRA adapter directory (`adapter_config.json`, `adapter_model.safetensors`).

    LoRA exports as itself. PBLoRA and MoSLoRA export at one fixed α as the equivalent LoRA of rank
    r1 + r2 or r (scale folded in, lora_alpha = r); MoSLoRA's shift becomes PEFT's `lora_bias`."""
    acfg, alpha = handle.adapter_config, single_pref(handle, pref)
    tensors, rank, has_bias = [], None, False
    for proj, weights in adapted(handle.adapter, acfg):
        if acfg.kind == "lora":
            left, right, bias = weights["A"], weights["B"], None
        else:
            left, right, bias = jax.vmap(lambda p: adapters.low_rank_factors(p, alpha, acfg))(weights)
        rank, has_bias = left.shape[-1], has_bias or bias is not None
        for i in range(handle.config.num_hidden_layers):
            prefix = f"base_model.model.{proj.hf_module(i)}"
            tensors.append((f"{prefix}.lora_A.weight", np.asarray(left[i], np.float32).T))
            tensors.append((f"{prefix}.lora_B.weight", np.asarray(right[i], np.float32).T))
            if bias is not None:
                tensors.append((f"{prefix}.lora_B.bias", np.asarray(bias[i], np.float32)))
    os.makedirs(out_dir, exist_ok=True)
    save_safetensors(os.path.join(out_dir, "adapter_model.safetensors"),
                     [(n, a.shape, a.dtype, lambda a=a: a) for n, a in tensors], {"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": handle.path,
        "r": rank, "lora_alpha": acfg.scale * rank if acfg.kind == "lora" else rank,
        "target_modules": list(acfg.targets), "lora_dropout": acfg.dropout, "bias": "none",
        "lora_bias": has_bias, "fan_in_fan_out": False, "use_rslora": False, "inference_mode": True,
        "init_lora_weights": True,
    }
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def export_merged(handle, out_dir: str, pref=None, dtype: str | None = None) -> None:
    """A Hugging Face directory with the adapter merged at α. A MoSLoRA shift becomes a bias, declared
    by the family's flag (a Llama's `attention_bias` / `mlp_bias`, zeros where nothing was adapted),
    which transformers and this project's loader both load."""
    merged = merge_adapter(handle, pref)
    export_hf(merged.params, merged.config, out_dir, dtype=dtype)
