"""This project's adapter directory: `adapter_config.json` (the adapter config, the base's shape, what
it learnt) + `adapter.safetensors` (float32, stacked over layers). Readable without orbax or this code.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import CheckpointError, MissingFileError
from uniarm_jax.hf.checkpoints import flatten, unflatten
from uniarm_jax.hf.safetensors import SafetensorsFile, save_safetensors
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import adapter_shapes, require_adapter

ADAPTER_FORMAT = "uniarm_jax.adapter/1"


# base-config fields an adapter checkpoint must agree with
_BASE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size")


def save_adapter(handle, out_dir: str, objectives=None) -> None:
    """`adapter_config.json` + `adapter.safetensors` (float32), readable without orbax or this code.
    `objectives` records what the ARM learnt, in its α order (GenARM: its one objective), so that a
    user cannot pair it with scorers in another order unnoticed."""
    require_adapter(handle)
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
        raise MissingFileError(f"adapter directory {adapter_dir!r} does not exist")
    if not os.path.isfile(path):
        raise MissingFileError(f"{adapter_dir!r} has no adapter_config.json; expected a directory written "
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
            raise CheckpointError(f"{adapter_dir}: adapter tensor {name!r} is missing "
                                  f"(expected shape {expected[name]})")
        if name not in expected:
            raise CheckpointError(f"{adapter_dir}: unexpected adapter tensor {name!r} with shape {file.shape(name)}")
        if file.shape(name) != tuple(expected[name]):
            raise CheckpointError(f"{adapter_dir}: adapter tensor {name!r} has shape {file.shape(name)}; "
                                  f"expected {tuple(expected[name])}")
    adapter = unflatten({name: jnp.asarray(file.read(name)) for name in expected})
    return dataclasses.replace(handle, adapter_config=acfg, adapter=adapter)
