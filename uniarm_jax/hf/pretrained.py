"""Hugging Face model directories in and out: `load_pretrained` (config.json + safetensors, sharded
over a mesh shard by shard), the tokenizer beside the weights, and `save_pretrained`."""

from __future__ import annotations

import os

from uniarm_jax import defaults
from uniarm_jax.errors import ConfigError, MissingFileError
from uniarm_jax.hf.checkpoints import export_hf, load_params
from uniarm_jax.hf.tokenizer import Tokenizer
from uniarm_jax.model.config import DTYPES, LlamaConfig
from uniarm_jax.model.handle import ModelHandle
from uniarm_jax.model.quantize import check_quantize


def load_pretrained(hf_dir: str, dtype: str = defaults.DTYPE, mesh=None, compute_dtype: str | None = None,
                    remat: bool = False, quantize: str | None = None) -> ModelHandle:
    """Loads `hf_dir` (config.json + safetensors) with weights in `dtype`, sharded over `mesh` if given.

    `compute_dtype` defaults to `dtype`; softmax and logits are float32 whatever it is. `quantize="int8"`
    quantizes the decoder's projection kernels on load (per output channel; `model/quantize.py`).
    """
    for name, value in (("dtype", dtype), ("compute_dtype", compute_dtype or dtype)):
        if value not in DTYPES:
            raise ConfigError(f"{name}={value!r} is not one of {DTYPES}")
    check_quantize(quantize)
    cfg = LlamaConfig.from_hf_dir(hf_dir, param_dtype=dtype, dtype=compute_dtype or dtype, remat=remat,
                                  quantize=quantize)
    return ModelHandle(cfg, load_params(hf_dir, cfg, mesh), mesh, hf_dir)


def load_tokenizer(hf_dir: str):
    """The tokenizer saved beside the weights: its `tokenizer.json` read directly where transformers
    would use it as is (`hf/tokenizer.py`: no torch import), else transformers' `AutoTokenizer`. No code
    from the directory is ever run."""
    if not os.path.isdir(hf_dir):
        raise MissingFileError(f"tokenizer directory {hf_dir!r} does not exist")
    tokenizer = Tokenizer.from_dir(hf_dir)
    if tokenizer is None:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=False)
    return tokenizer


def save_pretrained(handle: ModelHandle, out_dir: str, dtype: str | None = None) -> None:
    """Writes a Hugging Face directory (config + safetensors, and the tokenizer if the handle has one)."""
    export_hf(handle.params, handle.config, out_dir, dtype=dtype)
    if handle.path:
        for fname in os.listdir(handle.path):
            if fname.startswith(("tokenizer", "special_tokens_map", "generation_config", "chat_template")):
                with open(os.path.join(handle.path, fname), "rb") as src, \
                        open(os.path.join(out_dir, fname), "wb") as dst:
                    dst.write(src.read())
