"""An ARM: a frozen base Llama plus one adapter. Create, save, load, merge at a fixed α, export.

The adapter weights are a separate pytree (the `adapter` collection), stacked over layers like the
base weights: `{"layers": {"self_attn": {"q_proj": {"moslora": {"A": [L, d_in, r], ...}}}}}`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax import adapters
from uniarm_jax.adapters import AdapterConfig
from uniarm_jax.checkpoints import export_hf, flatten, unflatten
from uniarm_jax.config import LlamaConfig
from uniarm_jax.errors import CheckpointError, ConfigError
from uniarm_jax.model import Llama, count_params
from uniarm_jax.preferences import check_pref
from uniarm_jax.safetensors_io import SafetensorsFile, save_safetensors

ADAPTER_FORMAT = "uniarm_jax.adapter/1"
# base-config fields an adapter checkpoint must agree with
_BASE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size")


def group_of(target: str) -> str:
    return "self_attn" if target in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"


def _dummy_inputs(acfg: AdapterConfig):
    ids = jnp.zeros((1, 1), jnp.int32)
    pref = jnp.full((1, acfg.num_objectives), 1.0 / acfg.num_objectives) if acfg.takes_pref else None
    return ids, pref


def adapter_shapes(cfg: LlamaConfig, acfg: AdapterConfig) -> dict:
    """The adapter tree as ShapeDtypeStructs (nothing allocated, base weights included)."""
    ids, pref = _dummy_inputs(acfg)
    model = Llama(cfg, acfg)
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "adapter": jax.random.key(1)},
                                             ids, pref=pref))["adapter"]


def count_adapter_params(cfg: LlamaConfig, acfg: AdapterConfig) -> int:
    return count_params(adapter_shapes(cfg, acfg))


def init_adapter(handle, acfg: AdapterConfig, seed: int = 0):
    """A copy of `handle` carrying freshly initialised adapter weights (METHODS.md initialisation)."""
    ids, pref = _dummy_inputs(acfg)
    model = Llama(handle.config, acfg)

    @jax.jit
    def make(params, rng):
        return model.apply({"params": params}, ids, pref=pref, rngs={"adapter": rng}, mutable=["adapter"])[1]["adapter"]

    return dataclasses.replace(handle, adapter_config=acfg, adapter=make(handle.params, jax.random.key(seed)))


def _targets(adapter: dict, acfg: AdapterConfig):
    """(target, stacked weights) for each adapted projection."""
    for target in acfg.targets:
        yield target, adapter["layers"][group_of(target)][target][acfg.kind]


def _single_pref(handle, pref) -> np.ndarray | None:
    acfg = handle.adapter_config
    if not acfg.takes_pref:
        if pref is not None:
            raise ConfigError("a LoRA adapter takes no preference vector; pass pref=None")
        return None
    if pref is None:
        raise ConfigError(f"a {acfg.kind} adapter needs a preference vector of {acfg.num_objectives} weights")
    return check_pref(pref, acfg.num_objectives)[0]


def _require_adapter(handle):
    if handle.adapter is None:
        raise ConfigError("this model handle carries no adapter; load or initialise one first")


# ------------------------------------------------------------------------------------ merge / unmerge

def merge_adapter(handle, pref=None):
    """A handle with the adapter folded into the frozen kernels at one α: no adapter overhead.

    MoSLoRA's shift `s β(α) B` does not depend on the input, so it becomes an exact bias on the merged
    projection."""
    _require_adapter(handle)
    acfg, alpha = handle.adapter_config, _single_pref(handle, pref)
    params = jax.tree.map(lambda x: x, handle.params)
    for target, weights in _targets(handle.adapter, acfg):
        layer = params["layers"][group_of(target)][target] = dict(params["layers"][group_of(target)][target])
        dw, bias = jax.vmap(lambda p: adapters.delta_weight(p, alpha, acfg))(weights)
        kernel = layer["kernel"]
        layer["kernel"] = (kernel.astype(jnp.float32) + dw).astype(kernel.dtype)
        if bias is not None:
            layer["bias"] = bias.astype(kernel.dtype)
    return dataclasses.replace(handle, params=params, adapter_config=None, adapter=None)


def unmerge_adapter(merged, acfg: AdapterConfig, adapter: dict, pref=None):
    """The reverse of `merge_adapter`: the base kernels back and the adapter attached again."""
    handle = dataclasses.replace(merged, adapter_config=acfg, adapter=adapter)
    alpha = _single_pref(handle, pref)
    params = jax.tree.map(lambda x: x, merged.params)
    for target, weights in _targets(adapter, acfg):
        layer = params["layers"][group_of(target)][target] = dict(params["layers"][group_of(target)][target])
        dw, _ = jax.vmap(lambda p: adapters.delta_weight(p, alpha, acfg))(weights)
        layer["kernel"] = (layer["kernel"].astype(jnp.float32) - dw).astype(layer["kernel"].dtype)
        layer.pop("bias", None)
    return dataclasses.replace(handle, params=params)


# ------------------------------------------------------------------------------ our adapter checkpoint

def save_adapter(handle, out_dir: str, objectives=None) -> None:
    """`adapter_config.json` + `adapter.safetensors` (float32), readable without orbax or this code.
    `objectives` records what the ARM learnt, in its α order (GenARM: its one objective), so that a
    user cannot pair it with scorers in another order unnoticed."""
    _require_adapter(handle)
    os.makedirs(out_dir, exist_ok=True)
    flat = flatten(handle.adapter)
    save_safetensors(os.path.join(out_dir, "adapter.safetensors"),
                     [(k, x.shape, np.float32, lambda x=x: np.asarray(jax.device_get(x), np.float32))
                      for k, x in flat.items()])
    base = {f: getattr(handle.config, f) for f in _BASE_FIELDS}
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump({"format": ADAPTER_FORMAT, "adapter": handle.adapter_config.to_dict(), "base": base,
                   "base_path": handle.path, "objectives": None if objectives is None else list(objectives)},
                  f, indent=2)


def read_adapter_config(adapter_dir: str) -> dict:
    path = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.isdir(adapter_dir):
        raise FileNotFoundError(f"adapter directory {adapter_dir!r} does not exist")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{adapter_dir!r} has no adapter_config.json; expected a directory written "
                                "by save_adapter")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}; expected {ADAPTER_FORMAT!r}")
    return meta


def load_adapter(handle, adapter_dir: str):
    """A copy of `handle` carrying the adapter saved in `adapter_dir`, checked against the base."""
    meta = read_adapter_config(adapter_dir)
    acfg = AdapterConfig.from_dict(meta["adapter"])
    for field, value in meta["base"].items():
        if getattr(handle.config, field) != value:
            raise CheckpointError(f"adapter {adapter_dir!r} was trained on a base with {field}={value}; this base "
                                  f"has {field}={getattr(handle.config, field)}")
    expected = {name: x.shape for name, x in flatten(adapter_shapes(handle.config, acfg)).items()}
    file = SafetensorsFile(os.path.join(adapter_dir, "adapter.safetensors"))
    for name in sorted(set(expected) | set(file.keys())):
        if name not in file.keys():
            raise CheckpointError(f"{adapter_dir}: adapter tensor {name!r} is missing (expected shape {expected[name]})")
        if name not in expected:
            raise CheckpointError(f"{adapter_dir}: unexpected adapter tensor {name!r} with shape {file.shape(name)}")
        if file.shape(name) != tuple(expected[name]):
            raise CheckpointError(f"{adapter_dir}: adapter tensor {name!r} has shape {file.shape(name)}; "
                                  f"expected {tuple(expected[name])}")
    adapter = unflatten({name: jnp.asarray(file.read(name)) for name in expected})
    return dataclasses.replace(handle, adapter_config=acfg, adapter=adapter)


# ---------------------------------------------------------------------------------- PyTorch ecosystem

def export_peft(handle, out_dir: str, pref=None) -> None:
    """A PEFT LoRA adapter directory (`adapter_config.json`, `adapter_model.safetensors`).

    LoRA exports as itself. PBLoRA and MoSLoRA export at one fixed α as the equivalent LoRA of rank
    r1 + r2 or r (scale folded in, lora_alpha = r); MoSLoRA's shift becomes PEFT's `lora_bias`."""
    _require_adapter(handle)
    acfg, alpha = handle.adapter_config, _single_pref(handle, pref)
    tensors, rank, has_bias = [], None, False
    for target, weights in _targets(handle.adapter, acfg):
        if acfg.kind == "lora":
            left, right, bias = weights["A"], weights["B"], None
        else:
            left, right, bias = jax.vmap(lambda p: adapters.low_rank_factors(p, alpha, acfg))(weights)
        rank, has_bias = left.shape[-1], has_bias or bias is not None
        for i in range(handle.config.num_hidden_layers):
            prefix = f"base_model.model.model.layers.{i}.{group_of(target)}.{target}"
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
    """A Hugging Face directory with the adapter merged at α. A MoSLoRA shift becomes a bias: the
    directory then says `attention_bias` / `mlp_bias` true (zero biases on untargeted projections),
    which transformers loads; this project's own loader refuses biases, as for any biased Llama."""
    merged = merge_adapter(handle, pref)
    params = merged.params
    overrides = {}
    for group, flag, names in (("self_attn", "attention_bias", ("q_proj", "k_proj", "v_proj", "o_proj")),
                               ("mlp", "mlp_bias", ("gate_proj", "up_proj", "down_proj"))):
        layers = params["layers"][group]
        if any("bias" in layers[n] for n in names):
            overrides[flag] = True
            for n in names:
                kernel = layers[n]["kernel"]
                layers[n].setdefault("bias", jnp.zeros(kernel.shape[::2], kernel.dtype))
    export_hf(params, merged.config, out_dir, dtype=dtype, hf_overrides=overrides)
