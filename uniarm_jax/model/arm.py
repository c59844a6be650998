"""An ARM in memory: a frozen base Llama plus one adapter. Create it, count it, merge it at a fixed α.
(Its files are `hf/adapter_files.py`; its PyTorch exports `hf/peft.py`.)

The adapter weights are a separate pytree (the `adapter` collection), stacked over layers like the
base weights: `{"layers": {"self_attn": {"q_proj": {"moslora": {"A": [L, d_in, r], ...}}}}}`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import ConfigError
from uniarm_jax.model import adapters
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.llama import Llama, count_params
from uniarm_jax.model.projections import BY_NAME
from uniarm_jax.model.quantize import require_float


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
    """A copy of `handle` carrying freshly initialised adapter weights (docs/methods.md initialisation)."""
    ids, pref = _dummy_inputs(acfg)
    model = Llama(handle.config, acfg)

    @jax.jit
    def make(params, rng):
        return model.apply({"params": params}, ids, pref=pref, rngs={"adapter": rng}, mutable=["adapter"])[1]["adapter"]

    return dataclasses.replace(handle, adapter_config=acfg, adapter=make(handle.params, jax.random.key(seed)))


def adapted(adapter: dict, acfg: AdapterConfig):
    """(projection, stacked weights `[layers, ...]`) for each adapted projection."""
    for target in acfg.targets:
        proj = BY_NAME[target]
        yield proj, adapter["layers"][proj.group][proj.name][acfg.kind]


def single_pref(handle, pref) -> np.ndarray | None:
    """The one α `[k]` an ARM is merged or exported at (None for LoRA), checked."""
    require_adapter(handle)
    checked = adapters.checked_pref(handle.adapter_config, pref)
    return None if checked is None else checked[0]


def require_adapter(handle) -> None:
    if handle.adapter is None:
        raise ConfigError("this model handle carries no adapter; load or initialise one first")


def _kernel_layer(params: dict, proj) -> dict:
    """A fresh copy of `proj`'s leaf dict in `params` (so the caller's tree is left as it was)."""
    layer = params["layers"][proj.group][proj.name] = dict(params["layers"][proj.group][proj.name])
    return layer


# ------------------------------------------------------------------------------------ merge / unmerge

def merge_adapter(handle, pref=None):
    """A handle with the adapter folded into the frozen kernels at one α: no adapter overhead.

    MoSLoRA's shift `s β(α) B` does not depend on the input, so it becomes an exact bias on the merged
    projection (added to the base's own bias where it has one, as Qwen2's q/k/v)."""
    acfg, alpha = handle.adapter_config, single_pref(handle, pref)
    require_float(handle.config, "merging an adapter into the base")
    params = jax.tree.map(lambda x: x, handle.params)
    for proj, weights in adapted(handle.adapter, acfg):
        layer = _kernel_layer(params, proj)
        dw, bias = jax.vmap(lambda p: adapters.delta_weight(p, alpha, acfg))(weights)
        kernel = layer["kernel"]
        layer["kernel"] = (kernel.astype(jnp.float32) + dw).astype(kernel.dtype)
        if bias is not None:
            own = layer.get("bias", jnp.zeros((), jnp.float32))
            layer["bias"] = (own.astype(jnp.float32) + bias).astype(kernel.dtype)
    return dataclasses.replace(handle, params=params, adapter_config=None, adapter=None)


def unmerge_adapter(merged, acfg: AdapterConfig, adapter: dict, pref=None):
    """The reverse of `merge_adapter`: the base kernels back and the adapter attached again."""
    handle = dataclasses.replace(merged, adapter_config=acfg, adapter=adapter)
    alpha = single_pref(handle, pref)
    params = jax.tree.map(lambda x: x, merged.params)
    for proj, weights in adapted(adapter, acfg):
        layer = _kernel_layer(params, proj)
        dw, bias = jax.vmap(lambda p: adapters.delta_weight(p, alpha, acfg))(weights)
        layer["kernel"] = (layer["kernel"].astype(jnp.float32) - dw).astype(layer["kernel"].dtype)
        if proj.name not in merged.config.biases:
            layer.pop("bias", None)
        elif bias is not None:
            layer["bias"] = (layer["bias"].astype(jnp.float32) - bias).astype(layer["bias"].dtype)
    return dataclasses.replace(handle, params=params)

