"""Preference data: local json / jsonl / parquet files in three schemas, normalised to one form.

Every example becomes a prompt, two responses, `labels [k]` (the index of the preferred response per
objective) and `scores [2, k]` (a per-response score per objective, NaN where the data has none), with
the objective names alongside. Schemas (field names exactly as in the files):

- `pku`   PKU-SafeRLHF: `prompt, response_0, response_1, better_response_id, safer_response_id`;
          objectives `helpful` (better_response_id) and `harmless` (safer_response_id). Optional
          scores `reward_0, reward_1` (helpful) and `cost_0, cost_1` (harmless = −cost).
- `hh`    HH-RLHF: `prompt, chosen, rejected`; one objective `helpful`; response_0 = chosen, so the
          label is always 0.
- `multi` any k: `prompt, response_0, response_1`, one `label_<name>` per objective (0/1) and
          optional `score_<name>_0, score_<name>_1`; objective names come from the columns.

Any schema may carry `ended_0, ended_1` (booleans, both or neither): whether each response ended by
itself. A response that did not (a sample cut at its token budget) is trained as the prefix it is,
without an EOS: with one appended, a loss that lowers the rejected response lowers its EOS without
bound, and the ARM learns never to end (the study's first ARMs did: docs/results.md). Absent, every
response ended.

Every row is checked before anything else happens; a bad one is refused naming the file, the row
(counted from 1) and the field. Rows are kept in file order; shuffling belongs to the batches.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Sequence

import numpy as np

from uniarm_jax.errors import ConfigError, DataError, MissingFileError

SCHEMAS = ("pku", "hh", "multi")
DEFAULT_TEMPLATE = {"pku": "pku", "hh": "raw", "multi": "raw"}
FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
DROP_REASONS = {"max_chars": "prompt + response longer than max_chars characters"}


@dataclasses.dataclass(frozen=True)
class PreferenceExample:
    prompt: str
    response_0: str
    response_1: str
    labels: np.ndarray  # [k] int32: index (0 or 1) of the preferred response per objective
    scores: np.ndarray  # [2, k] float32: score of each response per objective; NaN where absent
    row: int  # the row in the source, counted from 1, so errors downstream can point at it
    ended: tuple[bool, bool] = (True, True)  # whether each response ended by itself (gets its EOS)


@dataclasses.dataclass
class PreferenceData:
    """A loaded data set: the kept examples and what happened to the rest."""

    examples: list[PreferenceExample]
    objectives: tuple[str, ...]
    source: str
    rows_read: int
    dropped: dict[str, int]  # reason (a key of DROP_REASONS) -> rows dropped for it

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, indices: Sequence[int]) -> PreferenceData:
        return dataclasses.replace(self, examples=[self.examples[i] for i in indices])

    def labels(self) -> np.ndarray:
        """[N, k] int32."""
        return np.array([e.labels for e in self.examples], np.int32).reshape(len(self), len(self.objectives))

    def scores(self) -> np.ndarray:
        """[N, 2, k] float32."""
        k = len(self.objectives)
        return np.array([e.scores for e in self.examples], np.float32).reshape(len(self), 2, k)

    def label_balance(self) -> dict[str, float]:
        """Per objective, the fraction of examples that prefer response_0."""
        return {name: float(v) for name, v in zip(self.objectives, (self.labels() == 0).mean(axis=0))}


@dataclasses.dataclass(frozen=True)
class _Objective:
    name: str
    label: str | None  # the label column; None: always 0 (HH-RLHF's chosen is response_0)
    scores: tuple[str, str] | None  # the score columns of response_0 and response_1
    sign: float = 1.0  # -1 turns a cost into a score


def load_preferences(path: str, schema: str, objectives: Sequence[str] | None = None,
                     max_chars: int | None = None, hub_split: str = "train") -> PreferenceData:
    """Reads `path` (.json, .jsonl or .parquet; a Hugging Face hub name only if `path` is no existing
    path and has none of those extensions) in `schema`, checks every row, and normalises it.

    `objectives` picks a subset of the data's objectives, in that order. `max_chars` drops rows whose
    prompt plus either response is longer than that many characters (the reference's pre-filter);
    the drops are counted in `dropped`, and a data set left empty is refused."""
    if schema not in SCHEMAS:
        raise ConfigError(f"schema {schema!r} is not one of {SCHEMAS}")
    if max_chars is not None and max_chars < 1:
        raise ConfigError(f"max_chars={max_chars} must be a positive number of characters")
    columns = _read_columns(path, hub_split)
    rows = len(next(iter(columns.values()), []))
    if rows == 0:
        raise DataError(f"{path} has no rows")
    text, objs = _schema_fields(path, schema, columns)
    objs = _select(path, objs, objectives)
    ended_columns = _pair(path, columns, "ended_0", "ended_1")

    examples, dropped = [], {reason: 0 for reason in DROP_REASONS}
    for i in range(rows):
        values = {key: _text(path, i, columns, field, schema) for key, field in text.items()}
        labels = np.array([0 if o.label is None else _label(path, i, columns, o.label) for o in objs],
                          np.int32)
        scores = np.full((2, len(objs)), np.nan, np.float32)
        for j, o in enumerate(objs):
            if o.scores is not None:
                scores[:, j] = [o.sign * _score(path, i, columns[c], c) for c in o.scores]
        longest = len(values["prompt"]) + max(len(values["response_0"]), len(values["response_1"]))
        if max_chars is not None and longest > max_chars:
            dropped["max_chars"] += 1
            continue
        ended = (True, True) if ended_columns is None else tuple(_flag(path, i, columns[c], c) for c in ended_columns)
        examples.append(PreferenceExample(**values, labels=labels, scores=scores, row=i + 1, ended=ended))
    if not examples:
        why = ", ".join(f"{n} with {DROP_REASONS[r].replace('max_chars', f'max_chars={max_chars}')}"
                        for r, n in dropped.items() if n)
        raise DataError(f"{path}: no rows left after filtering: all {rows} rows were dropped ({why})")
    return PreferenceData(examples, tuple(o.name for o in objs), str(path), rows, dropped)


def _read_columns(path: str, hub_split: str) -> dict[str, list]:
    """The file's columns as Python lists, through Hugging Face `datasets`."""
    import datasets

    ext = next((e for e in FORMATS if str(path).endswith(e)), None)
    if os.path.exists(path):
        if os.path.isdir(path) or ext is None:
            raise DataError(f"{path} is not a data file; expected one ending in {', '.join(FORMATS)}")
        if os.path.getsize(path) == 0:
            raise DataError(f"{path} is empty; expected rows of preference pairs")
        try:
            ds = datasets.load_dataset(FORMATS[ext], data_files=os.path.abspath(path), split="train")
        except Exception as e:  # arrow's parse errors arrive wrapped; the cause says what was wrong
            cause = e.__cause__ or e
            raise DataError(f"could not read {path} as {FORMATS[ext]}: {str(cause) or type(cause).__name__}") from e
    elif ext is not None:
        raise MissingFileError(f"data file {path!r} does not exist")
    else:
        try:
            ds = datasets.load_dataset(path, split=hub_split)
        except Exception as e:
            raise DataError(f"{path!r} is neither a local data file nor a data set the hub served: {e}") from e
    return {name: list(ds[name]) for name in ds.column_names}


def _schema_fields(path, schema, columns) -> tuple[dict[str, str], list[_Objective]]:
    """The text fields (normalised name -> column) and the objectives the data offers."""
    if schema == "hh":
        return {"prompt": "prompt", "response_0": "chosen", "response_1": "rejected"}, \
            [_Objective("helpful", None, None)]
    text = {"prompt": "prompt", "response_0": "response_0", "response_1": "response_1"}
    if schema == "pku":
        return text, [_Objective("helpful", "better_response_id", _pair(path, columns, "reward_0", "reward_1")),
                      _Objective("harmless", "safer_response_id", _pair(path, columns, "cost_0", "cost_1"), -1.0)]
    names = [c[len("label_"):] for c in columns if c.startswith("label_") and len(c) > len("label_")]
    if not names:
        raise DataError(f"{path} has no label_<name> column; the multi schema needs one per objective "
                        f"(0 or 1: the preferred response); its columns are {sorted(columns)}")
    for c in columns:
        if c.startswith("score_") and c.rsplit("_", 1)[-1] in ("0", "1") and c[6:-2] not in names:
            raise DataError(f"{path} has field {c!r} but no 'label_{c[6:-2]}'; each scored objective needs "
                            "its label column")
    return text, [_Objective(n, f"label_{n}", _pair(path, columns, f"score_{n}_0", f"score_{n}_1"))
                  for n in names]


def _pair(path, columns, a, b) -> tuple[str, str] | None:
    if (a in columns) != (b in columns):
        have, lack = (a, b) if a in columns else (b, a)
        raise DataError(f"{path} has field {have!r} but not {lack!r}; they come in pairs, one per response")
    return (a, b) if a in columns else None


def _select(path, objs: list[_Objective], names: Sequence[str] | None) -> list[_Objective]:
    if names is None:
        return objs
    names = list(names)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"objectives {names} must be a non-empty list of distinct names")
    by_name = {o.name: o for o in objs}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(f"objective(s) {missing} are not in {path}; it has {list(by_name)}")
    return [by_name[n] for n in names]


def _text(path, i, columns, field, schema) -> str:
    value = columns[field][i] if field in columns else None
    if value is None:
        needs = {"pku": "prompt, response_0, response_1, better_response_id, safer_response_id",
                 "hh": "prompt, chosen, rejected",
                 "multi": "prompt, response_0, response_1, label_<name>"}[schema]
        raise DataError(f"{path} row {i + 1}: missing field {field!r}; the {schema} schema needs {needs}")
    if not isinstance(value, str):
        raise DataError(f"{path} row {i + 1}: field {field!r} is {value!r}; expected a string")
    return value


def _label(path, i, columns, field) -> int:
    value = columns[field][i] if field in columns else None
    if value is None:
        raise DataError(f"{path} row {i + 1}: missing field {field!r}; expected 0 or 1 (the preferred response)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value not in (0, 1):
        raise DataError(f"{path} row {i + 1}: field {field!r} is {value!r}; expected 0 or 1 "
                        "(the index of the preferred response)")
    return int(value)


def _score(path, i, column, field) -> float:
    value = column[i]
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{path} row {i + 1}: field {field!r} is {value!r}; expected a number (or null)")
    return float(value)


def _flag(path, i, column, field) -> bool:
    value = column[i]
    if not isinstance(value, bool):
        raise DataError(f"{path} row {i + 1}: field {field!r} is {value!r}; expected true or false "
                        "(whether the response ended by itself)")
    return value


def split_data(data: PreferenceData, sizes: Sequence[float] = (0.8, 0.05, 0.15), seed: int = 0,
               names: Sequence[str] = ("train", "dev", "test")) -> dict[str, PreferenceData]:
    """Disjoint splits of a seeded permutation of the examples: `sizes` are fractions (summing to at
    most 1) or counts (all ints, summing to at most len(data)); PARM's 8K/0.5K/1.5K of PKU-SafeRLHF-10K
    is (0.8, 0.05, 0.15) or (8000, 500, 1500). The same seed gives the same splits."""
    parts = split_indices(len(data), sizes, seed, names, data.source)
    return {name: data.subset(order) for name, order in parts.items()}


def split_indices(n: int, sizes: Sequence[float], seed: int, names: Sequence[str],
                  source: str = "the data") -> dict[str, np.ndarray]:
    """`split_data`'s split of `range(n)`: the indices of each part, in a seeded permutation's order."""
    if len(sizes) != len(names):
        raise ConfigError(f"split sizes {list(sizes)} and names {list(names)} differ in length")
    if any(s < 0 for s in sizes):
        raise ConfigError(f"split sizes {list(sizes)} must not be negative")
    if all(isinstance(s, numbers.Integral) for s in sizes):
        if sum(sizes) > n:
            raise ConfigError(f"split sizes {list(sizes)} ask for {sum(sizes)} examples; {source} has {n}")
        ends = np.cumsum(sizes)
    else:
        if sum(sizes) > 1 + 1e-9:
            raise ConfigError(f"split fractions {list(sizes)} sum to {sum(sizes):.6g}; expected at most 1")
        ends = np.minimum(np.round(np.cumsum(sizes) * n).astype(int), n)
    order = np.random.default_rng(seed).permutation(n)
    starts = np.concatenate([[0], ends[:-1]])
    return {name: order[a:b] for name, a, b in zip(names, starts, ends)}
