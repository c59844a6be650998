"""Which model a Hugging Face directory holds, independent of where it lies: a fingerprint.

An adapter records the fingerprint of its base, so it loads onto the same model at any path and is
refused onto another. The fingerprint is the config's shape fields plus a hash of a few base tensors,
read cheaply from the checkpoint (the first rows of the embedding, the head and every tensor of the
first decoder layer, and the final norm: a few slices, whatever the model's size). The values are
rounded to bfloat16 before hashing, so a float32 checkpoint and its bfloat16 copy are one model, and the
dtype a base is loaded in does not matter (the files are read, not the loaded weights).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

import ml_dtypes
import numpy as np

from uniarm_jax.errors import ConfigError
from uniarm_jax.hf.checkpoints import TensorIndex, flatten, hf_tensor_names
from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.llama import param_shapes

# The config fields an adapter's shapes depend on (format 1 recorded exactly these).
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size")
FIELDS = ("model_type", *SHAPE_FIELDS, "weights")
_ROWS = 8  # rows of each hashed matrix (Hugging Face layout: output features)


@functools.lru_cache(maxsize=16)
def _hashed_tensors(cfg: LlamaConfig) -> tuple[str, ...]:
    """The HF names of the tensors hashed: every non-layer tensor and the first layer's (the files'
    tensors, whether the handle quantized them or not)."""
    shapes = param_shapes(cfg.replace(quantize=None))
    return tuple(sorted(hf_tensor_names(path, cfg)[0] for path in flatten(shapes)))


def weights_digest(hf_dir: str, cfg: LlamaConfig) -> str:
    tensors = TensorIndex(hf_dir)
    digest = hashlib.sha256()
    for name in _hashed_tensors(cfg):
        index = (slice(0, _ROWS),) if len(tensors.shape(name)) > 1 else ()
        values = tensors.read(name, index).astype(np.float32).astype(ml_dtypes.bfloat16)
        digest.update(name.encode() + b"\0" + values.tobytes())
    return "sha256:" + digest.hexdigest()


def _model_type(hf_dir: str) -> str | None:
    with open(os.path.join(hf_dir, "config.json")) as f:
        return json.load(f).get("model_type")


def fingerprint(hf_dir: str | None, cfg: LlamaConfig | None = None, fields=FIELDS) -> dict:
    """`fields` of the model in `hf_dir` (its config as `cfg`, e.g. a loaded handle's; default read
    from the directory). Only the fields asked for are computed: the hash reads the checkpoint."""
    if hf_dir is None and (cfg is None or {"model_type", "weights"} & set(fields)):
        raise ConfigError("this model handle has no directory (path None); an adapter's base is recognised by "
                          "its files: load the base with load_pretrained")
    cfg = cfg or LlamaConfig.from_hf_dir(hf_dir)
    values = {f: getattr(cfg, f) for f in SHAPE_FIELDS if f in fields}
    if "model_type" in fields:
        values["model_type"] = _model_type(hf_dir)
    if "weights" in fields:
        values["weights"] = weights_digest(hf_dir, cfg)
    return {f: values[f] for f in FIELDS if f in fields}


def mismatch(recorded: dict, hf_dir: str | None, cfg: LlamaConfig | None = None) -> str | None:
    """None when the model in `hf_dir` has the `recorded` fingerprint (the fields of it that were
    recorded), else what differs, naming the directory: the first field, or the weights."""
    actual = fingerprint(hf_dir, cfg, [f for f in FIELDS if f in recorded])
    for field, value in actual.items():
        if recorded[field] != value:
            if field == "weights":
                return f"{hf_dir!r} has the same shapes but other weights (fingerprints differ)"
            return f"{hf_dir!r} has {field}={value}, not {recorded[field]}"
    return None
