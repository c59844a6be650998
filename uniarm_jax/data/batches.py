"""Batches of preference pairs with static shapes, a seeded order, a resumable position, and
per-process slices for multi-host training.

Both responses of a pair follow the same prompt, so a batch packs each pair into ONE row: the prompt
once, then response 0, then response 1, each response attending to the prompt and to itself only
(docs/design.md §4). The prompt's tokens are computed once per pair instead of twice, and the loss
reads the logits only where it scores a token. A batch is a dict of numpy arrays (B pairs):

    input_ids    [B, T]    int32   prompt, response 0, response 1, right-padded with the pad id
    segments     [B, T]    int32   0 prompt, 1 response 0, 2 response 1, -1 padding
    target_ids   [B, 2, R] int32   the tokens the loss scores: response j's tokens, EOS included
    target_from  [B, 2, R] int32   where in the row the hidden state that predicts each one sits (the
                                   token before it in its own sequence: the prompt's last for the first)
    target_mask  [B, 2, R] int32   1 on real targets
    labels       [B, k]    int32   index of the preferred response per objective
    scores       [B, 2, k] float32 per-response scores, NaN where the data has none

T is the global batch's longest packed row rounded up to a multiple of `bucket`, R its longest response
rounded up to a multiple of a quarter of it, each capped by what max_total_tokens allows, so only a few
shapes are ever compiled (`bucket=None`: always the caps).
"""

from __future__ import annotations

import numpy as np

from uniarm_jax.data.tokenization import TokenizedPairs
from uniarm_jax.errors import ConfigError

PROMPT, PADDING = 0, -1  # segment ids; response j is segment j + 1


def bucket_length(longest: int, bucket: int | None, cap: int) -> int:
    """`longest` rounded up to a multiple of `bucket`, at most `cap` (`bucket=None`: `cap`)."""
    if not bucket:
        return cap
    return min(cap, max(bucket, -(-longest // bucket) * bucket))


def pack_pair(prompt, responses, length: int, response_length: int, pad_id: int) -> dict[str, np.ndarray]:
    """One pair as one packed row (the arrays above without their batch axis)."""
    p = len(prompt)
    if p + sum(map(len, responses)) > length or max(map(len, responses)) > response_length:
        raise ValueError(f"a pair of {p} + {[len(r) for r in responses]} tokens does not fit a row of {length} "
                         f"tokens with {response_length} per response")
    row = {"input_ids": np.full(length, pad_id, np.int32), "segments": np.full(length, PADDING, np.int32),
           "target_ids": np.zeros((2, response_length), np.int32),
           "target_from": np.zeros((2, response_length), np.int32),
           "target_mask": np.zeros((2, response_length), np.int32)}
    row["input_ids"][:p], row["segments"][:p] = prompt, PROMPT
    start = p
    for j, response in enumerate(responses):
        n = len(response)
        row["input_ids"][start:start + n], row["segments"][start:start + n] = response, j + 1
        row["target_ids"][j, :n] = response
        # token m of the response is predicted at the token before it: the prompt's last one for m = 0
        row["target_from"][j, :n] = np.concatenate([[p - 1], start + np.arange(n - 1)]) if n else []
        row["target_mask"][j, :n] = 1
        if p == 0 and n:  # nothing precedes a response without a prompt: its first token is not scored
            row["target_from"][j, 0], row["target_mask"][j, 0] = 0, 0
        start += n
    return row


def packed_lengths(data: TokenizedPairs) -> np.ndarray:
    """`[N, 2]`: each example's packed row length and its longer response's length."""
    return np.array([[len(p) + len(a) + len(b), max(len(a), len(b))]
                     for p, (a, b) in zip(data.prompt_ids, data.response_ids)], np.int64).reshape(len(data), 2)


def row_shape(lengths: np.ndarray, bucket: int | None, max_total_tokens: int) -> tuple[int, int]:
    """`(T, R)` of a batch whose examples have `packed_lengths` `lengths`."""
    row = bucket_length(int(lengths[:, 0].max()), bucket, 2 * max_total_tokens - 1)
    return row, bucket_length(int(lengths[:, 1].max()), bucket and max(1, bucket // 4), max_total_tokens - 1)


def collate(data: TokenizedPairs, indices, length: int, response_length: int) -> dict[str, np.ndarray]:
    """The batch of examples `indices`, each pair packed into a row of `length` tokens."""
    rows = [pack_pair(data.prompt_ids[int(i)], data.response_ids[int(i)], length, response_length, data.pad_id)
            for i in indices]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["labels"] = data.labels[np.asarray(indices, np.int64)]
    batch["scores"] = data.scores[np.asarray(indices, np.int64)]
    return batch


GROUP = 50  # batches sorted by length together with `group_by_length` (HF's mega-batches of 50)


def _batches_by_length(indices: np.ndarray, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """`indices` sorted by `lengths` (longest first, stable) and cut into batches; a last part
    shorter than a batch stays last (the epoch's remainder, dropped as without grouping)."""
    ranked = indices[np.argsort(-lengths, kind="stable")]
    return [ranked[i:i + batch_size] for i in range(0, len(ranked), batch_size)]


class PreferenceBatches:
    """Endless (or `num_epochs`) iterator over batches of `batch_size` pairs (the GLOBAL batch).

    Each epoch visits a permutation of the examples seeded by (seed, epoch) and drops the remainder
    that does not fill a batch, so every batch has the same number of rows. Process `process_index` of
    `process_count` yields only its contiguous slice of every global batch (all processes compute the
    same order and the same padded length, so the slices stack into the global batch). `state()` is
    the global position; `restore(state)` on a fresh iterator continues with the very same batches,
    whatever the number of processes."""

    def __init__(self, data: TokenizedPairs, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 bucket: int | None = 64, process_index: int = 0, process_count: int = 1,
                 num_epochs: int | None = None, group_by_length: bool = False):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ConfigError(f"process_index={process_index} must lie in [0, process_count={process_count})")
        if batch_size % process_count:
            raise ConfigError(f"global batch_size={batch_size} is not divisible by process_count={process_count}; "
                              "each process must read the same number of rows")
        if len(data) < batch_size:
            raise ConfigError(f"only {len(data)} examples for a global batch of {batch_size}; "
                              "not one full batch per epoch")
        if bucket is not None and bucket < 1:
            raise ConfigError(f"bucket={bucket} must be a positive number of tokens (or None)")
        self.data, self.batch_size, self.seed, self.shuffle = data, batch_size, seed, shuffle
        self.bucket, self.num_epochs, self.group_by_length = bucket, num_epochs, group_by_length
        self.process_index, self.process_count = process_index, process_count
        self.steps_per_epoch = len(data) // batch_size
        self._lengths = packed_lengths(data)
        self.epoch, self.index = 0, 0

    def order(self, epoch: int) -> np.ndarray:
        """The example order of `epoch`: the same for every process and every restart. With
        `group_by_length` (as HF's length-grouped sampler), each run of `GROUP` batches of the seeded
        permutation is sorted by packed length and its batches are shuffled again, so a batch holds
        pairs of like length and is padded to little more than its own rows (a batch padded to its
        longest pair computed ~2x the real tokens on short answers)."""
        if not self.shuffle:
            return np.arange(len(self.data))
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.data))
        if not self.group_by_length:
            return order
        size = GROUP * self.batch_size
        groups = [order[i:i + size] for i in range(0, len(order), size)]
        batches = [b for g in groups for b in _batches_by_length(g, self._lengths[g, 0], self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]  # only the last group can leave a part
        return np.concatenate([full[i] for i in rng.permutation(len(full))] + batches[len(full):])

    def global_indices(self, epoch: int, index: int) -> np.ndarray:
        return self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        indices = self.global_indices(self.epoch, self.index)
        shape = row_shape(self._lengths[indices], self.bucket, self.data.config.max_total_tokens)
        share = self.batch_size // self.process_count
        batch = collate(self.data, indices[self.process_index * share:(self.process_index + 1) * share], *shape)
        self.index += 1
        if self.index == self.steps_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return batch

    def state(self) -> dict:
        """The position of the next batch, as a small JSON-able dict."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "shuffle": self.shuffle,
                "batch_size": self.batch_size, "num_examples": len(self.data), "group_by_length": self.group_by_length}

    def restore(self, state: dict) -> None:
        """Continues from `state`; refused if it was taken over other data, seed, order or batch size."""
        for key, mine in (("seed", self.seed), ("shuffle", self.shuffle), ("batch_size", self.batch_size),
                          ("num_examples", len(self.data)), ("group_by_length", self.group_by_length)):
            if state.get(key, False if key == "group_by_length" else None) != mine:  # older states: ungrouped
                raise ConfigError(f"iterator state has {key}={state.get(key)!r}; this iterator has {key}={mine}, "
                                  "so it would not continue the same batches")
        epoch, index = state.get("epoch"), state.get("index")
        if not (isinstance(epoch, int) and isinstance(index, int) and epoch >= 0
                and 0 <= index < self.steps_per_epoch):
            raise ConfigError(f"iterator state epoch={epoch!r} index={index!r} is not a position in an epoch "
                              f"of {self.steps_per_epoch} batches")
        self.epoch, self.index = epoch, index
