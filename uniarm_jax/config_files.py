"""One loader for the project's YAML configs (`uniarm train`, `uniarm evaluate`).

A config is a frozen dataclass; its fields are the valid keys, their annotations the types and their
defaults the defaults, so nothing is declared twice. A field whose type is itself a dataclass is a
section (`optim.learning_rate`). The loader reads the YAML file (which may `inherit:` another file
beside it), applies `key=value` or `section.key=value` overrides from the command line (values read
as YAML), and builds the dataclass, refusing an unknown key with the valid ones and the closest
match, and a value of the wrong type naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing

import yaml

from uniarm_jax.errors import ConfigError

# A field's metadata may name keys of its section that the run derives itself (an adapter's number of
# objectives comes from the data): `dataclasses.field(..., metadata={"derived": ("num_objectives",)})`.
DERIVED = "derived"


def closest(key: str, valid) -> str:
    """' (did you mean 'x'?)' when some valid key is close to `key`, else ''."""
    match = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def load_config(cls, path: str | None, overrides=(), source: str = "config"):
    """`cls` built from its defaults, then the YAML file at `path`, then the overrides."""
    values = {} if path is None else read_yaml(path)
    for item in overrides:
        key, value = parse_override(item)
        *parents, leaf = key.split(".")
        if is_sectioned(cls) and not parents:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        node = values
        for name in parents:
            child = node.get(name)
            node = node.setdefault(name, {}) if not isinstance(child, dict) else child
        node[leaf] = value
    return build(cls, values, path or source)


def is_sectioned(cls) -> bool:
    """Whether every key of `cls` is a section (a dataclass) rather than a value."""
    hints = typing.get_type_hints(cls)
    return all(dataclasses.is_dataclass(hints[f.name]) for f in dataclasses.fields(cls))


def read_yaml(path: str) -> dict:
    """A YAML mapping; `inherit: other.yaml` (beside it) is read first and updated section by section."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    merged = read_yaml(os.path.join(os.path.dirname(path), parent))
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def parse_override(item: str) -> tuple[str, object]:
    """'optim.learning_rate=1e-4' -> ('optim.learning_rate', 1e-4) (the value read as YAML)."""
    if "=" not in item or not item.split("=", 1)[0]:
        raise ConfigError(f"override {item!r} is not of the form key=value (or section.key=value)")
    key, raw = item.split("=", 1)
    try:
        return key, yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: the value is not valid YAML") from None


def build(cls, values: dict, source: str, prefix: str = "", derived=()):
    """An instance of the dataclass `cls` from a mapping, every key and value checked."""
    if not isinstance(values, dict):
        what = f"section {prefix.rstrip('.')!r}" if prefix else "the config"
        raise ConfigError(f"{source}: {what} must be a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in derived}
    hints = typing.get_type_hints(cls)
    for key in values:
        if key in derived:
            raise ConfigError(f"{source}: {prefix}{key} is not set in a config; the run derives it")
        if key not in fields:
            if is_sectioned(cls):
                raise ConfigError(f"{source}: unknown section {key!r}{closest(key, fields)}; valid sections are "
                                  f"{sorted(fields)}")
            section = f" of {prefix.rstrip('.')!r}" if prefix else ""
            raise ConfigError(f"{source}: unknown key {prefix}{key}{closest(key, fields)}; valid keys{section} are "
                              f"{sorted(fields)}")
    kwargs = {}
    for name, field in fields.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            section = values.get(name)
            kwargs[name] = build(kind, {} if section is None else section, source, f"{prefix}{name}.",
                                 field.metadata.get(DERIVED, ()))
        elif name in values:
            kwargs[name] = coerce(values[name], kind, f"{source}: {prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def coerce(value, kind, where: str):
    """`value` as the annotated type `kind`, or a ConfigError naming `where`. YAML reads `1e-4` as a
    string (its floats need a dot): a string that is a number counts as one."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        errors = []
        for other in others:
            try:
                return coerce(value, other, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}={value!r} is none of {others}")
    if isinstance(value, str) and kind in (int, float) and _NUMBER.fullmatch(value.strip()):
        value = float(value) if any(c in value for c in ".eE") else int(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r} must be a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r} must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} must be a string")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} must be a list")
        inner = args[0] if args else typing.Any
        return tuple(coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} must be a mapping")
        inner = args[1] if len(args) == 2 else typing.Any
        return {k: coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        source, _, key = where.partition(": ")
        return build(kind, value, source, f"{key}.")
    return value  # typing.Any: the consumer checks it


def require(config, names, source: str) -> None:
    """Refuses a config whose dotted keys `names` are unset (None or empty)."""
    for name in names:
        value = config
        for part in name.split("."):
            value = getattr(value, part)
        if value is None or value == "":
            raise ConfigError(f"{source}: {name} is not set; give it in the YAML file or as {name}=...")


def to_dict(config) -> dict:
    """A config as plain YAML/JSON data (tuples as lists), for writing beside a run's outputs."""
    def plain(x):
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    return plain(dataclasses.asdict(config))
