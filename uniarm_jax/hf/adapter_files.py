"""Adapter directories: this project's own (`adapter_config.json` with the adapter config, the base's
fingerprint and what it learnt, + `adapter.safetensors`, float32, stacked over layers; readable without
orbax or this code), and PEFT LoRA directories (`hf/peft.py`), read as the same kind of record.

Format 2 records its base by fingerprint (`hf/fingerprint.py`), with the path it was trained at only
as a hint (under $HOME written `~/…`, so a committed adapter names no one's machine): it loads onto the
same model wherever it lies. Format 1 (its base's shape fields and
absolute path) is still read.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import CheckpointError, MissingFileError
from uniarm_jax.hf import peft
from uniarm_jax.hf.checkpoints import flatten, unflatten
from uniarm_jax.hf.fingerprint import fingerprint, mismatch
from uniarm_jax.hf.safetensors import SafetensorsFile, save_safetensors
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import adapter_shapes, require_adapter
from uniarm_jax.model.config import LlamaConfig

ADAPTER_FORMAT = "uniarm_jax.adapter/2"
FORMAT_1 = "uniarm_jax.adapter/1"
PEFT = "peft"


@dataclasses.dataclass(frozen=True)
class AdapterRecord:
    """What an adapter directory says about itself and its base."""

    path: str
    format: str                    # ADAPTER_FORMAT, FORMAT_1 or PEFT
    adapter_config: AdapterConfig
    base: dict | None              # the base's fingerprint (format 1: its shape fields; PEFT: none)
    base_name: str                 # the base as messages name it
    base_hint: str | None          # where the base was: a path (format 1: its only record), or PEFT's
    #                                base_model_name_or_path (often a hub id)
    objectives: list | None        # what it learnt, in its α order (GenARM: its one objective)

    def base_mismatch(self, hf_dir: str | None, cfg: LlamaConfig | None = None) -> str | None:
        """None when the model in `hf_dir` is this adapter's base as far as the record can tell (a PEFT
        directory records nothing: its tensor shapes are checked on loading), else what differs."""
        return None if self.base is None else mismatch(self.base, hf_dir, cfg)


def save_adapter(handle, out_dir: str, objectives=None) -> None:
    """`adapter_config.json` + `adapter.safetensors` (float32), readable without orbax or this code.
    `objectives` records what the ARM learnt, in its α order (GenARM: its one objective), so that a
    user cannot pair it with scorers in another order unnoticed."""
    require_adapter(handle)
    base = fingerprint(handle.path, handle.config)
    os.makedirs(out_dir, exist_ok=True)
    flat = flatten(handle.adapter)
    save_safetensors(os.path.join(out_dir, "adapter.safetensors"),
                     [(k, x.shape, np.float32, lambda x=x: np.asarray(jax.device_get(x), np.float32))
                      for k, x in flat.items()])
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump({"format": ADAPTER_FORMAT, "adapter": handle.adapter_config.to_dict(), "base": base,
                   "base_name": os.path.basename(os.path.normpath(handle.path)),
                   "base_path_hint": _home_relative(handle.path),
                   "objectives": None if objectives is None else list(objectives)}, f, indent=2)


def _home_relative(path: str) -> str:
    path, home = os.path.abspath(path), os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path


def read_adapter(adapter_dir: str, num_layers: int | None = None) -> AdapterRecord:
    """The record of `adapter_dir`: this project's format 2 or 1, or a PEFT LoRA directory (checked
    for a base of `num_layers` layers when given, else for the layers its tensors cover)."""
    path = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.isdir(adapter_dir):
        raise MissingFileError(f"adapter directory {adapter_dir!r} does not exist")
    if not os.path.isfile(path):
        raise MissingFileError(f"{adapter_dir!r} has no adapter_config.json; expected a directory written "
                               "by save_adapter or a PEFT LoRA directory")
    with open(path) as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if "peft_type" in meta:
        acfg = peft.peft_adapter_config(meta, path, num_layers or peft.num_layers(adapter_dir))
        hint = meta.get("base_model_name_or_path")
        return AdapterRecord(adapter_dir, PEFT, acfg, None, hint or "its base", hint, None)
    if meta.get("format") not in (ADAPTER_FORMAT, FORMAT_1):
        raise CheckpointError(f"{path} has format {meta.get('format')!r}; expected {ADAPTER_FORMAT!r} (or the older "
                              f"{FORMAT_1!r}), or a PEFT adapter_config.json (with peft_type)")
    acfg = AdapterConfig.from_dict(meta["adapter"])
    if meta["format"] == FORMAT_1:
        hint = meta.get("base_path")
        name = os.path.basename(os.path.normpath(hint)) if hint else "its base"
        return AdapterRecord(adapter_dir, FORMAT_1, acfg, meta["base"], name, hint, meta.get("objectives"))
    hint = meta.get("base_path_hint")
    return AdapterRecord(adapter_dir, ADAPTER_FORMAT, acfg, meta["base"], meta["base_name"],
                         hint and os.path.expanduser(hint), meta.get("objectives"))


def load_adapter(handle, adapter_dir: str):
    """A copy of `handle` carrying the adapter saved in `adapter_dir` (either kind of directory),
    refused when `handle` is not the adapter's base, naming both."""
    record = read_adapter(adapter_dir, handle.config.num_hidden_layers)
    problem = record.base_mismatch(handle.path, handle.config)
    if problem:
        raise CheckpointError(f"adapter {adapter_dir!r} was trained on {record.base_name!r}, not on this base: "
                              f"{problem}")
    acfg = record.adapter_config
    if record.format == PEFT:
        adapter = peft.read_peft_weights(adapter_dir, handle.config, acfg)
    else:
        adapter = _read_weights(adapter_dir, handle.config, acfg)
    return dataclasses.replace(handle, adapter_config=acfg, adapter=adapter)


def _read_weights(adapter_dir: str, cfg: LlamaConfig, acfg: AdapterConfig) -> dict:
    expected = {name: x.shape for name, x in flatten(adapter_shapes(cfg, acfg)).items()}
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
    return unflatten({name: jnp.asarray(file.read(name)) for name in expected})


def find_base(record: AdapterRecord, candidates) -> str:
    """The first of `candidates` (directories; None skipped) that holds the adapter's base, else an
    error saying what each one is and asking for `--arm-base DIR`."""
    tried = []
    for hf_dir in dict.fromkeys(c for c in candidates if c):
        if not os.path.isdir(hf_dir):
            hub = " (a hub id? nothing is downloaded)" if record.format == PEFT else ""
            tried.append(f"{hf_dir!r} does not exist{hub}")
            continue
        problem = record.base_mismatch(hf_dir)
        if problem is None:
            return hf_dir
        tried.append(problem)
    where = "; ".join(tried) or "it records no path"
    raise CheckpointError(f"ARM {record.path!r} was trained on {record.base_name!r}, which is not here: {where}; "
                          "pass --arm-base DIR with that model")
