"""A Llama with a linear score head read at the last real token (the beaver-7b reward/cost models
of the safety task; transformers' `LlamaForSequenceClassification`), run on our Flax Llama, jitted,
in length buckets."""

from __future__ import annotations

import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from uniarm_jax.errors import ConfigError, ScoringError
from uniarm_jax.eval.scoring import model_inputs
from uniarm_jax.eval.scoring.checks import BaseScorer, short_text

SCORE_HEADS = ("score", "score_head")  # transformers' LlamaForSequenceClassification; safe-rlhf's LlamaForScore


def _is_final_norm(module, method_name: str) -> bool:
    return module.path == ("norm",) and method_name == "__call__"


@functools.lru_cache(maxsize=8)
def _score_fn(cfg):
    """Jitted: final hidden state (the output of the Llama's last norm, captured) at each row's last
    real token, dotted with the head's row in float32. The LM-head logits are never returned, so XLA
    drops them."""
    from uniarm_jax.model.llama import Llama

    model = Llama(cfg)

    def run(params, ids, mask, w, b):
        _, state = model.apply({"params": params}, ids, mask, capture_intermediates=_is_final_norm,
                               mutable=["intermediates"])
        hidden = state["intermediates"]["norm"]["__call__"][0]  # [batch, length, embed]
        last = jnp.argmax(jnp.arange(ids.shape[1]) * mask, axis=-1)  # rightmost real token (either padding)
        h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)
        return jnp.dot(h, w, precision=jax.lax.Precision.HIGHEST) + b
    return jax.jit(run)


class LlamaScoreScorer(BaseScorer):
    """A Llama score model on our Flax Llama. The backbone (`model.*`) loads through our checkpoint
    loader (sharded over `mesh` if given); the head `<head>.weight [num_labels, hidden]` (and its
    optional bias) is read beside it. Batches: `batch_size` rows (short batches padded with empty rows),
    lengths padded up to a power of two (at least 16, at most `max_length`), so a few compiled shapes
    serve any set of responses."""

    def __init__(self, name: str, path: str, tokenizer: str | None = None, head: str = "auto",
                 label_index: int = 0, format: str = "{prompt}{response}", batch_size: int = 8,
                 max_length: int | None = None, sign: float = 1.0, dtype: str = "float32",
                 padding_side: str = "right", mesh=None):
        from uniarm_jax.hf.checkpoints import TensorIndex, load_params
        from uniarm_jax.model.config import DTYPES, LlamaConfig

        model_inputs.local_dir(path, "score model", name)
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
        self.tokenizer = model_inputs.load_scorer_tokenizer(tokenizer or path, name)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.config.pad_token_id or 0
        self.max_length = max_length or self.config.max_position_embeddings

    def _bucket(self, n: int) -> int:
        return min(max(16, 1 << (n - 1).bit_length()), self.max_length)

    def _score(self, prompts, responses):
        rows = model_inputs.encode_pairs(self.tokenizer, self.format, prompts, responses, self.max_length, self.name)
        vocab = self.config.vocab_size
        for row, prompt in zip(rows, prompts):
            if max(row) >= vocab:
                raise ScoringError(f"objective {self.name!r}: the tokenizer gave token id {max(row)} for prompt "
                                   f"{short_text(prompt)!r}; the score model's vocabulary has {vocab} tokens")
        fn = _score_fn(self.config)
        out = np.empty(len(rows))
        for idx in model_inputs.length_batches(rows, self.batch_size):
            chunk = [rows[i] for i in idx]
            ids, mask = model_inputs.pad_rows(chunk, self.batch_size, self._bucket(max(map(len, chunk))), self.pad_id,
                             self.padding_side)
            ids, mask = jnp.asarray(ids), jnp.asarray(mask)
            if self.mesh is not None:
                from uniarm_jax.model.sharding import batch_sharding

                sharding = batch_sharding(self.mesh, ids.shape)
                ids, mask = jax.device_put(ids, sharding), jax.device_put(mask, sharding)
            out[idx] = np.asarray(fn(self.params, ids, mask, self.w, self.b))[:len(idx)]
        return out
