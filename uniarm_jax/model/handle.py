"""The public model handle: load a Hugging Face Llama directory, run it, export it back."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import ConfigError
from uniarm_jax.model.adapters import AdapterConfig, checked_pref
from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.llama import Llama, count_params
from uniarm_jax.model.sharding import batch_sharding


@dataclasses.dataclass
class ModelHandle:
    """A loaded model: its config, its (possibly sharded) frozen parameters, the mesh, where it came
    from, and optionally an adapter (see `uniarm_jax.model.arm`) that makes it an ARM."""

    config: LlamaConfig
    params: dict
    mesh: jax.sharding.Mesh | None = None
    path: str | None = None
    adapter_config: AdapterConfig | None = None
    adapter: dict | None = None

    @property
    def num_params(self) -> int:
        return count_params(self.params)


@functools.lru_cache(maxsize=16)
def _forward(cfg: LlamaConfig, acfg: AdapterConfig | None):
    def run(params, adapter, ids, mask, pref):
        variables = {"params": params} if adapter is None else {"params": params, "adapter": adapter}
        return Llama(cfg, acfg).apply(variables, ids, mask, pref)
    return jax.jit(run)


def logits(handle: ModelHandle, input_ids, attention_mask=None, pref=None) -> np.ndarray:
    """Float32 logits `[batch, length, vocab]` of the full forward. Batches may be left-padded.

    With a PBLoRA or MoSLoRA adapter, `pref` gives each row's preference vector (`[batch, k]`, or one
    `[k]` for every row); it is checked here, before anything is compiled."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ConfigError(f"input_ids must be an integer array [batch, length]; got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= handle.config.vocab_size):
        raise ConfigError(f"input_ids hold token ids in [{ids.min()}, {ids.max()}]; the vocabulary has "
                         f"{handle.config.vocab_size} tokens")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise ConfigError(f"attention_mask has shape {mask.shape}; input_ids have {ids.shape}")
    acfg = handle.adapter_config
    pref = checked_pref(acfg, pref, ids.shape[0])
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    if handle.mesh is not None:
        sharding = batch_sharding(handle.mesh, ids.shape)
        ids, mask = jax.device_put(ids, sharding), jax.device_put(mask, sharding)
        if pref is not None:
            pref = jax.device_put(jnp.asarray(pref), batch_sharding(handle.mesh, pref.shape))
    out = _forward(handle.config, acfg)(handle.params, handle.adapter, ids, mask, pref)
    return np.asarray(out, np.float32)


def truncate_layers(handle: ModelHandle, first: int, last: int = 0) -> ModelHandle:
    """A shallower model with the same embedding, final norm, head and tokenizer, keeping the bottom
    `first` and the top `last` decoder layers (the weak ARM of a weak-to-strong experiment). Keeping
    some top layers matters: they are the ones that speak the output embedding's language (SmolLM2-135M
    with 12 of 30 layers: 8.4 nats per response token as 6 + 6, 21.7 as the bottom 12; the full model 2.2)."""
    total = handle.config.num_hidden_layers
    if first < 0 or last < 0 or not 1 <= first + last <= total:
        raise ConfigError(f"cannot keep the first {first} and last {last} layers of a model with {total}; expected "
                          f"non-negative counts keeping 1 to {total} layers")
    index = np.r_[0:first, total - last:total]
    params = dict(handle.params, layers=jax.tree.map(lambda x: x[index], handle.params["layers"]))
    return dataclasses.replace(handle, config=dataclasses.replace(handle.config, num_hidden_layers=first + last),
                               params=params)


