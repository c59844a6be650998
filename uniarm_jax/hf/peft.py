"""PEFT LoRA directories in and out, and merged exports.

In: a PEFT LoRA directory (`adapter_config.json` + `adapter_model.safetensors`, as peft and TRL write
them, e.g. GenARM's ARMs) read as this project's LoRA adapter. Its config is checked first: anything
that would make PEFT compute something else than `x W0 + s · x A B` on whole projections (DoRA, biases,
modules outside the projection table, per-module ranks, a subset of layers, base-modifying initialisations)
is refused by name. Out (`uniarm export`): an ARM as a PEFT LoRA directory, or a Hugging Face directory
with the adapter merged at one α.
"""

from __future__ import annotations

import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import CheckpointError, ConfigError, MissingFileError
from uniarm_jax.hf.checkpoints import flatten, unflatten
from uniarm_jax.hf.pretrained import save_pretrained
from uniarm_jax.hf.safetensors import SafetensorsFile, save_safetensors
from uniarm_jax.model import adapters
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import adapted, adapter_shapes, merge_adapter, single_pref
from uniarm_jax.model.projections import BY_NAME, NAMES, PROJECTIONS

PEFT_TYPE = "LORA"
WEIGHTS_FILE = "adapter_model.safetensors"
# LoraConfig fields whose other values change what the adapter computes, with the values that do not.
_NEUTRAL = {
    "use_dora": (False, None), "bias": ("none", None), "lora_bias": (False, None),
    "modules_to_save": (None, []), "rank_pattern": (None, {}), "alpha_pattern": (None, {}),
    "layers_to_transform": (None, []), "exclude_modules": (None, [], ""), "trainable_token_indices": (None,),
    "layer_replication": (None, []), "target_parameters": (None, []), "alora_invocation_tokens": (None,),
    "use_qalora": (False, None), "use_bdlora": (None,), "arrow_config": (None,), "kasa_config": (None,),
    "monteclora_config": (None,), "velora_config": (None,),
}
# Initialisations that change the base weights too (the adapter then fits a residual base that is not
# on disk, unless peft converted it to a plain LoRA on saving, which writes init_lora_weights: true).
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
# The modules of a Llama-family model that PEFT could adapt besides the projections.
_OTHER_MODULES = ("lm_head", "model.embed_tokens")


def _peft_name(proj, layer: int, leaf: str) -> str:
    """A PEFT tensor name: `leaf` is lora_A.weight, lora_B.weight or lora_B.bias."""
    return f"base_model.model.{proj.hf_module(layer)}.{leaf}"


def _matches(module: str, target: str) -> bool:
    """PEFT's rule for a list entry: the module's whole name or its last dotted parts."""
    return module == target or module.endswith("." + target)


def _selected_targets(target_modules, num_layers: int, source: str) -> tuple[str, ...]:
    """The projections PEFT's `target_modules` selects (a list of names matched as module-name suffixes,
    a regex matched against whole module names, or "all-linear"), as peft matches them; each one
    selected in every layer or in none."""
    if target_modules == "all-linear":
        return NAMES
    if isinstance(target_modules, str):
        def selects(module):
            return re.fullmatch(target_modules, module) is not None
    elif isinstance(target_modules, list) and all(isinstance(t, str) for t in target_modules):
        def selects(module):
            return any(_matches(module, t) for t in target_modules)
        for t in target_modules:
            if not any(_matches(p.hf_module(i), t) for p in PROJECTIONS for i in range(num_layers)):
                raise ConfigError(f"{source}: target module {t!r} is not supported; an ARM here adapts only the "
                                  f"projections {NAMES}")
    else:
        raise ConfigError(f"{source}: target_modules={target_modules!r}; expected a list of module names or a "
                          "regex string")
    other = [m for m in _OTHER_MODULES if selects(m)]
    if other:
        raise ConfigError(f"{source}: target_modules={target_modules!r} adapts {other[0]!r}, which is not "
                          f"supported; an ARM here adapts only the projections {NAMES}")
    targets = []
    for proj in PROJECTIONS:
        layers = [i for i in range(num_layers) if selects(proj.hf_module(i))]
        if layers and len(layers) < num_layers:
            raise ConfigError(f"{source}: target_modules={target_modules!r} adapts {proj.name} in layers {layers} "
                              f"of {num_layers} only; an adapted projection must be adapted in every layer")
        if layers:
            targets.append(proj.name)
    if not targets:
        raise ConfigError(f"{source}: target_modules={target_modules!r} selects none of the projections {NAMES}")
    return tuple(targets)


def peft_adapter_config(meta: dict, source: str, num_layers: int) -> AdapterConfig:
    """The LoRA `AdapterConfig` a PEFT `adapter_config.json` describes, for a base of `num_layers`.
    The scale is PEFT's: lora_alpha / r, or lora_alpha / √r with `use_rslora`. `fan_in_fan_out` only
    says how GPT-2's Conv1D stores its kernel; on a Llama's linear layers PEFT itself resets it and the
    LoRA weights are the same, so either value reads the same."""
    if meta.get("peft_type") != PEFT_TYPE:
        raise ConfigError(f"{source}: peft_type={meta.get('peft_type')!r} is not supported; expected {PEFT_TYPE!r} "
                          "(a LoRA adapter)")
    if meta.get("task_type") not in (None, "CAUSAL_LM"):
        raise ConfigError(f"{source}: task_type={meta['task_type']!r} is not supported; an ARM is a causal LM "
                          "(CAUSAL_LM)")
    for field, neutral in _NEUTRAL.items():
        if field in meta and meta[field] not in neutral:
            raise ConfigError(f"{source}: {field}={meta[field]!r} is not supported; expected "
                              f"{' or '.join(repr(v) for v in neutral)}")
    init = meta.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        raise ConfigError(f"{source}: init_lora_weights={init!r} is not supported: it changes the base weights too; "
                          "save the adapter with peft's path_initial_model_for_weight_conversion to make it a "
                          "plain LoRA")
    for field in ("r", "lora_alpha", "target_modules"):
        if meta.get(field) is None:
            raise ConfigError(f"{source}: {field} is missing")
    rank = meta["r"]
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ConfigError(f"{source}: r={rank!r}; expected a positive integer")
    alpha = float(meta["lora_alpha"]) * (math.sqrt(rank) if meta.get("use_rslora") else 1.0)  # s = alpha / r
    return AdapterConfig(kind="lora", targets=_selected_targets(meta["target_modules"], num_layers, source),
                         rank=rank, lora_alpha=alpha, dropout=float(meta.get("lora_dropout") or 0.0),
                         num_objectives=1)


def _weights_file(peft_dir: str) -> SafetensorsFile:
    path = os.path.join(peft_dir, WEIGHTS_FILE)
    if not os.path.isfile(path):
        found = " (it holds adapter_model.bin; save it with safe_serialization=True)" if os.path.isfile(
            os.path.join(peft_dir, "adapter_model.bin")) else ""
        raise MissingFileError(f"{peft_dir!r} has no {WEIGHTS_FILE}{found}")
    return SafetensorsFile(path)


_LAYER = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.")  # a PEFT name of `Projection.hf_module`


def num_layers(peft_dir: str) -> int:
    """How many decoder layers the tensors of a PEFT directory cover (its base is not known yet)."""
    found = [int(m.group(1)) for name in _weights_file(peft_dir).keys() if (m := _LAYER.match(name))]
    if not found:
        raise CheckpointError(f"{os.path.join(peft_dir, WEIGHTS_FILE)} holds no LoRA tensors of decoder layers")
    return max(found) + 1


def read_peft_weights(peft_dir: str, cfg, acfg: AdapterConfig) -> dict:
    """The adapter tree (`A [L, d_in, r]`, `B [L, r, d_out]`) from `adapter_model.safetensors`, every
    tensor checked: a missing, unexpected or mis-shaped one is refused naming it."""
    file = _weights_file(peft_dir)
    shapes = flatten(adapter_shapes(cfg, acfg))  # "layers/self_attn/q_proj/lora/A": [L, d_in, r]
    names = {path: [_peft_name(BY_NAME[path.split("/")[2]], i, f"lora_{path[-1]}.weight")
                    for i in range(cfg.num_hidden_layers)] for path in shapes}
    expected = {name: tuple(reversed(shapes[path].shape[1:])) for path in shapes for name in names[path]}
    for name in sorted(set(expected) | set(file.keys())):
        if name not in file.keys():
            raise CheckpointError(f"{file.path}: tensor {name!r} is missing (expected shape {expected[name]})")
        if name not in expected:
            raise CheckpointError(f"{file.path}: unexpected tensor {name!r} with shape {file.shape(name)}; the "
                                  f"config describes a LoRA of rank {acfg.rank} on {', '.join(acfg.targets)} only")
        if file.shape(name) != expected[name]:
            raise CheckpointError(f"{file.path}: tensor {name!r} has shape {file.shape(name)}; this base expects "
                                  f"{expected[name]}")
    return unflatten({path: jnp.asarray(np.stack([file.read(n).astype(np.float32).T for n in names[path]]))
                      for path in shapes})


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
            tensors.append((_peft_name(proj, i, "lora_A.weight"), np.asarray(left[i], np.float32).T))
            tensors.append((_peft_name(proj, i, "lora_B.weight"), np.asarray(right[i], np.float32).T))
            if bias is not None:
                tensors.append((_peft_name(proj, i, "lora_B.bias"), np.asarray(bias[i], np.float32)))
    os.makedirs(out_dir, exist_ok=True)
    save_safetensors(os.path.join(out_dir, WEIGHTS_FILE),
                     [(n, a.shape, a.dtype, lambda a=a: a) for n, a in tensors], {"format": "pt"})
    config = {
        "peft_type": PEFT_TYPE, "task_type": "CAUSAL_LM", "base_model_name_or_path": handle.path,
        "r": rank, "lora_alpha": acfg.scale * rank if acfg.kind == "lora" else rank,
        "target_modules": list(acfg.targets), "lora_dropout": acfg.dropout, "bias": "none",
        "lora_bias": has_bias, "fan_in_fan_out": False, "use_rslora": False, "inference_mode": True,
        "init_lora_weights": True,
    }
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def export_merged(handle, out_dir: str, pref=None, dtype: str | None = None) -> None:
    """A Hugging Face directory with the adapter merged at α, with the base's tokenizer files (a
    usable model directory: a healed weak ARM's base is one). A MoSLoRA shift becomes a bias, declared
    by the family's flag (a Llama's `attention_bias` / `mlp_bias`, zeros where nothing was adapted),
    which transformers and this project's loader both load."""
    save_pretrained(merge_adapter(handle, pref), out_dir, dtype=dtype)
