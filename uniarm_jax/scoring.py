"""Reward functions, one per objective (METHODS.md §4): what `uniarm evaluate` scores responses with.

A scorer is any callable `scorer(prompts, responses) -> np.ndarray [n]` (float) with a `name` (the
objective's). Every objective is maximised, so a cost model enters with `sign: -1`. `make_scorer`
builds one from a config dict; its `kind` is one of

- `programmatic`: a pure function of (prompt, response) text. Built in, for the small-scale task:
  `brevity`, `informativeness` and `tone` (below); or the user's own `module:function`. That runs code
  named in the user's own config, never anything found in a model directory.
- `hf_classifier`: a transformers `AutoModelForSequenceClassification` from a local directory (the
  gpt2-large helpful/harmless reward models of the assistant task), run in torch on the CPU.
- `llama_score`: a Llama with a linear score head read at the last real token (the beaver-7b
  reward/cost models of the safety task; transformers' `LlamaForSequenceClassification`), run on our
  Flax Llama, jitted, in length buckets.

Common keys: `kind`, `name` (default: the function's name, or the directory's), `sign` (+1 or −1).
Model kinds also take `path`, `tokenizer` (default: `path`), `format` (default `"{prompt}{response}"`;
beaver's is `"BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{response}"`), `label_index` (which
output is the score, default 0), `batch_size` and `max_length` (a longer text keeps BOS and its last
tokens: the response's end is what is judged).

A non-finite score is an error naming the objective and the prompt (`score_responses` checks every
scorer, whatever built it).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
from typing import Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import ConfigError


class ScoringError(ValueError):
    """A scorer that returned something other than one finite score per response."""


@runtime_checkable
class Scorer(Protocol):
    name: str

    def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------- checks

def _short(prompt: str, limit: int = 60) -> str:
    return prompt if len(prompt) <= limit else prompt[:limit] + "…"


def _check_inputs(prompts, responses) -> tuple[list[str], list[str]]:
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ScoringError(f"{len(prompts)} prompts and {len(responses)} responses were given; "
                           "expected one response per prompt")
    for what, texts in (("prompt", prompts), ("response", responses)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ScoringError(f"{what} {i} is a {type(text).__name__}; expected a str")
    return prompts, responses


def check_scores(name: str, prompts: list[str], scores) -> np.ndarray:
    """`scores` as float64 `[n]`, or an error naming the objective and the first prompt whose response
    scored NaN or ±inf."""
    out = np.asarray(scores, np.float64)
    if out.shape != (len(prompts),):
        raise ScoringError(f"objective {name!r} returned scores of shape {out.shape} for {len(prompts)} "
                           f"responses; expected ({len(prompts)},)")
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        i = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise ScoringError(f"objective {name!r} scored {out[i]} for the response to prompt "
                           f"{_short(prompts[i])!r}{more}; expected a finite score")
    return out


def score_responses(scorers, prompts, responses) -> np.ndarray:
    """Scores `[n, k]`: column j is objective j, each column checked to be finite."""
    prompts, responses = _check_inputs(prompts, responses)
    cols = [check_scores(s.name, prompts, s(prompts, responses)) for s in scorers]
    return np.stack(cols, axis=1) if cols else np.zeros((len(prompts), 0))


# ------------------------------------------------------------------- programmatic objectives

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")
STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for with from as into about over under than that this
these those it its it's is are was were be been being am do does did done have has had i you he she we
they me him her us them my your his our their what which who whom whose when where why how not no yes
can could will would shall should may might must just very too also there here up down out off all any
some such only own same both each few more most other again further once s t don't i'm you're
""".split())
POSITIVE = frozenset("""
good great excellent happy glad pleased delighted wonderful kind helpful thank thanks thankful
appreciate love lovely nice enjoy enjoyable welcome pleasure positive hope hopeful best better
brilliant fantastic awesome amazing cheerful friendly warm gentle safe calm easy perfect sure
""".split())
NEGATIVE = frozenset("""
bad terrible awful horrible sad angry upset hate hateful stupid dumb useless worse worst annoying
unfortunately sorry fail failure wrong ugly rude hostile cruel dangerous harmful disgusting boring
difficult impossible never poor painful miserable disappointing
""".split())


def words(text: str) -> list[str]:
    """Lower-cased words (letters/digits, with inner apostrophes): the unit of every built-in."""
    return _WORD.findall(text.lower())


def brevity(prompt: str, response: str, scale: float = 50.0) -> float:
    """`scale / (scale + n)` for a response of n words: 1 when empty, 1/2 at `scale` words, → 0.
    Bounded, so it sits on the same footing as the others for hypervolumes."""
    return scale / (scale + len(words(response)))


def informativeness(prompt: str, response: str, scale: float = 10.0) -> float:
    """`d / (d + scale)` for d distinct content words (not stopwords) of the response that the prompt
    does not already hold: new information costs words, so it trades off against `brevity`."""
    seen = set(words(prompt))
    d = len({w for w in words(response) if w not in STOPWORDS and w not in seen})
    return d / (d + scale)


def tone(prompt: str, response: str) -> float:
    """`(pos − neg) / (pos + neg + 1)` over the words of the response found in `POSITIVE` / `NEGATIVE`
    (counted with repeats, no negation handling): in (−1, 1), 0 for a neutral response."""
    ws = words(response)
    pos = sum(w in POSITIVE for w in ws)
    neg = sum(w in NEGATIVE for w in ws)
    return (pos - neg) / (pos + neg + 1)


BUILTINS: dict[str, Callable[..., float]] = {"brevity": brevity, "informativeness": informativeness,
                                             "tone": tone}


# ---------------------------------------------------------------------------------- scorers

class _Scorer:
    """Shared by the built scorers: input checks, the sign, and the finiteness check."""

    name: str
    sign: float = 1.0

    def __call__(self, prompts, responses) -> np.ndarray:
        prompts, responses = _check_inputs(prompts, responses)
        if not prompts:
            return np.zeros(0)
        return check_scores(self.name, prompts, self.sign * np.asarray(self._score(prompts, responses), np.float64))

    def _score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        raise NotImplementedError


class ProgrammaticScorer(_Scorer):
    """`fn(prompt, response, **args) -> float` applied to each pair."""

    def __init__(self, name: str, fn: Callable[..., float], args: dict | None = None, sign: float = 1.0):
        self.name, self.fn, self.args, self.sign = name, fn, dict(args or {}), sign

    def _score(self, prompts, responses):
        out = []
        for p, r in zip(prompts, responses):
            value = self.fn(p, r, **self.args)
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                raise ScoringError(f"objective {self.name!r}: {getattr(self.fn, '__name__', self.fn)} returned "
                                   f"{value!r} for the response to prompt {_short(p)!r}; expected a number") from None
        return np.array(out, np.float64)


def _format_text(fmt: str, prompt: str, response: str) -> str:
    # One pass, not str.format or chained replaces: prompts and responses may hold braces or "{response}".
    return re.sub(r"\{(prompt|response)\}", lambda m: prompt if m.group(1) == "prompt" else response, fmt)


def _encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids with the tokenizer's special tokens; a text over `max_length` keeps its BOS and its
    last tokens."""
    bos = tokenizer.bos_token_id
    rows = []
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        ids = list(ids)
        if len(ids) > max_length:
            head = ids[:1] if bos is not None and ids[0] == bos else []
            ids = head + ids[len(ids) - (max_length - len(head)):]
        rows.append(ids)
    return rows


def _pad(rows: list[list[int]], n_rows: int, length: int, pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((n_rows, length), pad_id, np.int32)
    mask = np.zeros((n_rows, length), np.int32)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(length - len(row), length)
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def _batches(rows: list[list[int]], batch_size: int):
    """Index chunks of similar lengths (sorted), so padding stays small."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _check_encoded(name: str, rows, prompts) -> None:
    for row, prompt in zip(rows, prompts):
        if not row:
            raise ScoringError(f"objective {name!r}: the text for prompt {_short(prompt)!r} has no tokens; "
                               "expected at least one to read the score at")


def _local_dir(path, what: str, name: str) -> str:
    if not isinstance(path, str) or not os.path.isdir(path):
        raise FileNotFoundError(f"{what} directory {path!r} of objective {name!r} does not exist; "
                                "expected a local Hugging Face model directory")
    return path


def _load_tokenizer(path: str, name: str):
    from transformers import AutoTokenizer

    _local_dir(path, "tokenizer", name)
    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)


class HFClassifierScorer(_Scorer):
    """A transformers sequence classifier (torch, CPU, float32); the score is the logit `label_index`
    of the model's own pooling (its last non-pad token). Right-padded batches, so models with absolute
    positions (GPT-2) see each text as they would alone."""

    def __init__(self, name: str, path: str, tokenizer: str | None = None, label_index: int = 0,
                 format: str = "{prompt}{response}", batch_size: int = 8, max_length: int | None = None,
                 sign: float = 1.0):
        import torch
        from transformers import AutoModelForSequenceClassification

        _local_dir(path, "reward model", name)
        self.name, self.format, self.batch_size, self.sign = name, format, batch_size, sign
        self.tokenizer = _load_tokenizer(tokenizer or path, name)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, trust_remote_code=False, dtype=torch.float32).eval()
        cfg = self.model.config
        if not 0 <= label_index < cfg.num_labels:
            raise ConfigError(f"label_index={label_index} of objective {name!r} is out of range; "
                              f"{path} has {cfg.num_labels} output(s)")
        self.label_index = label_index
        if cfg.pad_token_id is None:
            # transformers pools at the last token that is not the config's pad id: batches pad with it.
            cfg.pad_token_id = next((t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
                                     if t is not None), None)
            if cfg.pad_token_id is None:
                raise ConfigError(f"objective {name!r}: neither {path}/config.json nor the tokenizer names a pad "
                                  "or EOS token; expected one to pad batches with")
        self.pad_id = cfg.pad_token_id
        self.max_length = max_length or getattr(cfg, "max_position_embeddings", None) or 1024

    def _score(self, prompts, responses):
        import torch

        texts = [_format_text(self.format, p, r) for p, r in zip(prompts, responses)]
        rows = _encode(self.tokenizer, texts, self.max_length)
        _check_encoded(self.name, rows, prompts)
        out = np.empty(len(rows))
        for idx in _batches(rows, self.batch_size):
            chunk = [rows[i] for i in idx]
            ids, mask = _pad(chunk, len(chunk), max(map(len, chunk)), self.pad_id, "right")
            with torch.no_grad():
                logits = self.model(input_ids=torch.from_numpy(ids).long(),
                                    attention_mask=torch.from_numpy(mask).long()).logits
            out[idx] = logits[:, self.label_index].float().numpy()
        return out


SCORE_HEADS = ("score", "score_head")  # transformers' LlamaForSequenceClassification; safe-rlhf's LlamaForScore


def _is_final_norm(module, method_name: str) -> bool:
    return module.path == ("norm",) and method_name == "__call__"


@functools.lru_cache(maxsize=8)
def _score_fn(cfg):
    """Jitted: final hidden state (the output of the Llama's last norm, captured) at each row's last
    real token, dotted with the head's row in float32. The LM-head logits are never returned, so XLA
    drops them."""
    from uniarm_jax.model import Llama

    model = Llama(cfg)

    def run(params, ids, mask, w, b):
        _, state = model.apply({"params": params}, ids, mask, capture_intermediates=_is_final_norm,
                               mutable=["intermediates"])
        hidden = state["intermediates"]["norm"]["__call__"][0]  # [batch, length, embed]
        last = jnp.argmax(jnp.arange(ids.shape[1]) * mask, axis=-1)  # rightmost real token (either padding)
        h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)
        return jnp.dot(h, w, precision=jax.lax.Precision.HIGHEST) + b
    return jax.jit(run)


class LlamaScoreScorer(_Scorer):
    """A Llama score model on our Flax Llama. The backbone (`model.*`) loads through our checkpoint
    loader (sharded over `mesh` if given); the head `<head>.weight [num_labels, hidden]` (and its
    optional bias) is read beside it. Batches: `batch_size` rows (short batches padded with empty rows),
    lengths padded up to a power of two (at least 16, at most `max_length`), so a few compiled shapes
    serve any set of responses."""

    def __init__(self, name: str, path: str, tokenizer: str | None = None, head: str = "auto",
                 label_index: int = 0, format: str = "{prompt}{response}", batch_size: int = 8,
                 max_length: int | None = None, sign: float = 1.0, dtype: str = "float32",
                 padding_side: str = "right", mesh=None):
        from uniarm_jax.checkpoints import TensorIndex, load_params
        from uniarm_jax.config import DTYPES, LlamaConfig

        _local_dir(path, "score model", name)
        if dtype not in DTYPES:
            raise ConfigError(f"dtype={dtype!r} of objective {name!r} is not one of {DTYPES}")
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side={padding_side!r} of objective {name!r} is not 'left' or 'right'")
        # The score model has no LM head: loading it as tied leaves lm_head out of the tree (the tied
        # logits are computed in the graph but never returned, so XLA drops them).
        self.config = LlamaConfig.from_hf_dir(path, param_dtype=dtype, dtype=dtype, tie_word_embeddings=True)
        with open(os.path.join(path, "config.json")) as f:
            if json.load(f).get("do_normalize"):
                raise ConfigError(f"{path}/config.json: do_normalize=true (safe-rlhf's score normaliser) is not "
                                  "supported; expected false")
        tensors = TensorIndex(path)
        names = tensors.names()
        if head == "auto":
            found = [h for h in SCORE_HEADS if f"{h}.weight" in names]
            if len(found) != 1:
                raise ConfigError(f"{path}: found {len(found) or 'no'} score head(s) among "
                                  f"{[h + '.weight' for h in SCORE_HEADS]}; expected exactly one (or set head:)")
            head = found[0]
        elif f"{head}.weight" not in names:
            raise ConfigError(f"{path}: has no tensor {head + '.weight'!r}; expected the score head named by head:")
        weight = np.asarray(tensors.read(f"{head}.weight"), np.float32)
        if weight.ndim != 2 or weight.shape[1] != self.config.hidden_size:
            raise ConfigError(f"{path}: tensor {head + '.weight'!r} has shape {weight.shape}; expected "
                              f"[num_labels, {self.config.hidden_size}]")
        if not 0 <= label_index < weight.shape[0]:
            raise ConfigError(f"label_index={label_index} of objective {name!r} is out of range; "
                              f"{path} has {weight.shape[0]} output(s)")
        bias = np.asarray(tensors.read(f"{head}.bias"), np.float32).reshape(-1)[label_index] \
            if f"{head}.bias" in names else np.float32(0)
        self.w, self.b = jnp.asarray(weight[label_index]), jnp.asarray(bias, jnp.float32)
        # Besides the backbone: the head, and safe-rlhf's (unused) score-normaliser statistics.
        ignore = rf"{re.escape(head)}\.(weight|bias)|normalizer\.\w+"
        self.params = load_params(path, self.config, mesh, ignore=ignore)
        self.mesh = mesh
        self.name, self.format, self.batch_size, self.sign = name, format, batch_size, sign
        self.padding_side = padding_side
        self.tokenizer = _load_tokenizer(tokenizer or path, name)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.config.pad_token_id or 0
        self.max_length = max_length or self.config.max_position_embeddings

    def _bucket(self, n: int) -> int:
        return min(max(16, 1 << (n - 1).bit_length()), self.max_length)

    def _score(self, prompts, responses):
        texts = [_format_text(self.format, p, r) for p, r in zip(prompts, responses)]
        rows = _encode(self.tokenizer, texts, self.max_length)
        _check_encoded(self.name, rows, prompts)
        vocab = self.config.vocab_size
        for row, prompt in zip(rows, prompts):
            if max(row) >= vocab:
                raise ScoringError(f"objective {self.name!r}: the tokenizer gave token id {max(row)} for prompt "
                                   f"{_short(prompt)!r}; the score model's vocabulary has {vocab} tokens")
        fn = _score_fn(self.config)
        out = np.empty(len(rows))
        for idx in _batches(rows, self.batch_size):
            chunk = [rows[i] for i in idx]
            ids, mask = _pad(chunk, self.batch_size, self._bucket(max(map(len, chunk))), self.pad_id,
                             self.padding_side)
            ids, mask = jnp.asarray(ids), jnp.asarray(mask)
            if self.mesh is not None:
                from uniarm_jax.sharding import batch_sharding

                sharding = batch_sharding(self.mesh, ids.shape)
                ids, mask = jax.device_put(ids, sharding), jax.device_put(mask, sharding)
            out[idx] = np.asarray(fn(self.params, ids, mask, self.w, self.b))[:len(idx)]
        return out


# ---------------------------------------------------------------------------------- factory

_COMMON = ("kind", "name", "sign")
_MODEL_KEYS = ("path", "tokenizer", "label_index", "format", "batch_size", "max_length")
_KEYS = {
    "programmatic": _COMMON + ("function", "args"),
    "hf_classifier": _COMMON + _MODEL_KEYS,
    "llama_score": _COMMON + _MODEL_KEYS + ("head", "dtype", "padding_side"),
}
KINDS = tuple(_KEYS)


def _import_function(path: str, name: str) -> Callable:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"function {path!r} of objective {name!r} is neither a built-in {tuple(BUILTINS)} "
                          "nor an import path 'module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"function {path!r} of objective {name!r} could not be imported: {e}") from None
    if not callable(fn):
        raise ConfigError(f"function {path!r} of objective {name!r} is a {type(fn).__name__}; expected a callable")
    return fn


def make_scorer(spec: dict, mesh=None) -> Scorer:
    """A scorer from its config dict (see the module docstring); `mesh` shards a `llama_score` model."""
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
    opts = {k: v for k, v in spec.items() if k not in ("kind", "name")}
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
        fn = BUILTINS[function] if function in BUILTINS else _import_function(function, name)
        args = spec.get("args") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"programmatic scorer {name!r}: args={args!r}; expected a mapping of keyword arguments")
        return ProgrammaticScorer(name, fn, args, sign)

    path = spec.get("path")
    if not isinstance(path, str):
        raise ConfigError(f"{kind} scorer: path={path!r}; expected a local model directory")
    name = spec.get("name") or os.path.basename(os.path.normpath(path))
    opts.pop("path")
    if kind == "hf_classifier":
        return HFClassifierScorer(name, path, **opts)
    return LlamaScoreScorer(name, path, mesh=mesh, **opts)


def make_scorers(specs, mesh=None) -> list[Scorer]:
    """One scorer per objective, in order; objective names must be distinct."""
    scorers = [make_scorer(s, mesh) for s in specs]
    names = [s.name for s in scorers]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"objective name {dup!r} is given to more than one scorer; expected distinct names")
    return scorers


__all__ = ["Scorer", "ScoringError", "make_scorer", "make_scorers", "score_responses", "check_scores",
           "brevity", "informativeness", "tone", "BUILTINS", "KINDS"]
