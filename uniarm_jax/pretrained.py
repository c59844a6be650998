"""The public model handle: load a Hugging Face Llama directory, run it, export it back."""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.adapters import AdapterConfig
from uniarm_jax.checkpoints import export_hf, load_params
from uniarm_jax.config import DTYPES, LlamaConfig
from uniarm_jax.errors import ConfigError
from uniarm_jax.model import Llama, count_params
from uniarm_jax.preferences import check_pref
from uniarm_jax.sharding import batch_sharding


@dataclasses.dataclass
class ModelHandle:
    """A loaded model: its config, its (possibly sharded) frozen parameters, the mesh, where it came
    from, and optionally an adapter (see `uniarm_jax.arm`) that makes it an ARM."""

    config: LlamaConfig
    params: dict
    mesh: jax.sharding.Mesh | None = None
    path: str | None = None
    adapter_config: AdapterConfig | None = None
    adapter: dict | None = None

    @property
    def num_params(self) -> int:
        return count_params(self.params)


def load_pretrained(hf_dir: str, dtype: str = "float32", mesh=None, compute_dtype: str | None = None,
                    remat: bool = False) -> ModelHandle:
    """Loads `hf_dir` (config.json + safetensors) with weights in `dtype`, sharded over `mesh` if given.

    `compute_dtype` defaults to `dtype`; softmax and logits are float32 whatever it is.
    """
    for name, value in (("dtype", dtype), ("compute_dtype", compute_dtype or dtype)):
        if value not in DTYPES:
            raise ConfigError(f"{name}={value!r} is not one of {DTYPES}")
    cfg = LlamaConfig.from_hf_dir(hf_dir, param_dtype=dtype, dtype=compute_dtype or dtype, remat=remat)
    return ModelHandle(cfg, load_params(hf_dir, cfg, mesh), mesh, hf_dir)


def load_tokenizer(hf_dir: str):
    """The tokenizer saved beside the weights. No code from the directory is ever run."""
    from transformers import AutoTokenizer

    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"tokenizer directory {hf_dir!r} does not exist")
    return AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=False)


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
        raise ValueError(f"input_ids must be an integer array [batch, length]; got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= handle.config.vocab_size):
        raise ValueError(f"input_ids hold token ids in [{ids.min()}, {ids.max()}]; the vocabulary has "
                         f"{handle.config.vocab_size} tokens")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {mask.shape}; input_ids have {ids.shape}")
    acfg = handle.adapter_config
    if acfg is not None and acfg.takes_pref:
        if pref is None:
            raise ConfigError(f"this {acfg.kind} ARM needs pref: one preference vector of "
                              f"{acfg.num_objectives} weights per row")
        pref = jnp.asarray(check_pref(pref, acfg.num_objectives, ids.shape[0]))
    elif pref is not None:
        raise ConfigError("pref was given, but this model has no preference-conditioned adapter")
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    if handle.mesh is not None:
        sharding = batch_sharding(handle.mesh, ids.shape)
        ids, mask = jax.device_put(ids, sharding), jax.device_put(mask, sharding)
        if pref is not None:
            pref = jax.device_put(pref, batch_sharding(handle.mesh, pref.shape))
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


def save_pretrained(handle: ModelHandle, out_dir: str, dtype: str | None = None) -> None:
    """Writes a Hugging Face directory (config + safetensors, and the tokenizer if the handle has one)."""
    export_hf(handle.params, handle.config, out_dir, dtype=dtype)
    if handle.path:
        for fname in os.listdir(handle.path):
            if fname.startswith(("tokenizer", "special_tokens_map", "generation_config", "chat_template")):
                with open(os.path.join(handle.path, fname), "rb") as src, \
                        open(os.path.join(out_dir, fname), "wb") as dst:
                    dst.write(src.read())
