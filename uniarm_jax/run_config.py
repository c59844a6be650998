"""Experiment configs: YAML files in `configs/` plus `section.key=value` overrides on the command line.

A config has fixed sections (model, adapter, objective, data, optim, mesh, run, distributed); every key
is declared here with its default, so a typo is refused listing the valid keys and the closest match
instead of being silently ignored.
"""

from __future__ import annotations

import copy
import difflib
import os
import re

import yaml

from uniarm_jax.errors import ConfigError

DEFAULTS: dict[str, dict] = {
    "model": {
        "base": None,               # Hugging Face directory of the ARM's base (and initialisation)
        "dtype": "float32",         # parameter dtype of the frozen base
        "compute_dtype": None,      # matmul dtype (default: dtype); loss and softmax are float32
        "remat": False,             # recompute decoder layers in the backward pass
    },
    "adapter": {
        "kind": "moslora", "targets": ["q_proj", "k_proj", "v_proj"], "rank": 8, "rank_shared": None,
        "lora_alpha": None, "dropout": 0.05, "shared_core": True, "modulation": "scale_shift",
    },
    "objective": {
        "method": "uniarm", "betas": [0.01, 0.01], "objective": 0, "concentration": 0.5,
        "lambda_dim": 1.0, "lambda_glob": 1.0, "reading": "dim_global",
    },
    "data": {
        "train": None,              # local json / jsonl / parquet file
        "dev": None,                # optional; else carved out of `train` by `dev_fraction`
        "schema": "pku",
        "template": "pku",
        "objectives": None,         # names to train on, in order (default: all the data has)
        "max_prompt_tokens": 512,
        "max_total_tokens": 1024,
        "max_chars": None,
        "dev_fraction": 0.05,
        "bucket": 64,
        "seed": 0,
    },
    "optim": {
        "learning_rate": 5e-4, "warmup_steps": 20, "weight_decay": 0.05, "grad_clip": 1.0,
        "batch_size": 32,           # global batch (pairs) per optimizer step
        "micro_batches": 1,         # gradient accumulation: batch_size / micro_batches pairs per forward
        "epochs": 2, "max_steps": None,
    },
    "mesh": {"data": -1, "fsdp": 1, "tensor": 1},   # -1: all remaining devices
    "run": {
        "out_dir": "runs/default", "seed": 0, "save_every": 100, "keep": 3, "eval_every": 100,
        "log_every": 10, "tensorboard": True, "progress": True,
    },
    "distributed": {
        "auto": False,              # TPU pods, SLURM: let jax.distributed find the other processes
        "coordinator_address": None, "num_processes": None, "process_id": None,  # GPU / CPU clusters
        "cpu_collectives": "gloo",  # CPU processes only
    },
}


def _closest(key: str, valid) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def merge(config: dict, updates: dict, source: str) -> dict:
    """`config` with `updates` applied, refusing sections and keys that do not exist."""
    out = copy.deepcopy(config)
    for section, values in (updates or {}).items():
        if section not in DEFAULTS:
            raise ConfigError(f"{source}: unknown section {section!r}{_closest(section, DEFAULTS)}; "
                              f"valid sections are {sorted(DEFAULTS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys to values")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{source}: unknown key {section}.{key}{_closest(key, DEFAULTS[section])}; "
                                  f"valid keys of {section!r} are {sorted(DEFAULTS[section])}")
            out[section][key] = _typed(section, key, value, source)
    return out


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _typed(section: str, key: str, value, source: str):
    """YAML reads `1e-4` as a string (its floats need a dot): numbers are numbers here. A value whose
    default is a number or a flag must be one."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value) if any(c in value for c in ".eE") else int(value)
    default = DEFAULTS[section][key]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {section}.{key}={value!r} must be true or false")
    elif isinstance(default, (int, float)) and value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {section}.{key}={value!r} must be a number")
    return value


def parse_overrides(items: list[str]) -> dict:
    """['optim.learning_rate=1e-4', 'adapter.targets=[q_proj,v_proj]'] -> nested dict (YAML-typed)."""
    updates: dict = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        section, key = dotted.split(".", 1)
        updates.setdefault(section, {})[key] = yaml.safe_load(raw) if raw else None
    return updates


def load_run_config(path: str | None, overrides: list[str] = ()) -> dict:
    """Defaults, then the YAML file (which may `inherit:` another file beside it), then overrides."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        config = merge(config, _read_yaml(path), path)
    return merge(config, parse_overrides(list(overrides)), "command line")


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    base = _read_yaml(os.path.join(os.path.dirname(path), parent))
    for section, values in data.items():
        base.setdefault(section, {}).update(values or {})
    return base
