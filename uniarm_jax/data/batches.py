"""Batches of preference pairs with static shapes, a seeded order, a resumable position, and
per-process slices for multi-host training.

A batch is a dict of numpy arrays (B rows, both responses of each pair side by side):

    input_ids       [B, 2, L] int32   prompt + response tokens, right-padded with the pad id
    attention_mask  [B, 2, L] int32   1 on real tokens
    loss_mask       [B, 2, L] int32   1 where the TOKEN is a response token (EOS included); the loss
                                      scores token t with the logits of position t - 1
    labels          [B, k]    int32   index of the preferred response per objective
    scores          [B, 2, k] float32 per-response scores, NaN where the data has none

L is the global batch's longest row rounded up to a multiple of `bucket` and capped at
max_total_tokens, so only a few shapes are ever compiled (`bucket=None`: always max_total_tokens).
"""

from __future__ import annotations

import numpy as np

from uniarm_jax.data.tokenization import TokenizedPairs
from uniarm_jax.errors import ConfigError


def bucket_length(longest: int, bucket: int | None, cap: int) -> int:
    """`longest` rounded up to a multiple of `bucket`, at most `cap` (`bucket=None`: `cap`)."""
    if not bucket:
        return cap
    return min(cap, max(bucket, -(-longest // bucket) * bucket))


def collate(data: TokenizedPairs, indices, length: int) -> dict[str, np.ndarray]:
    """The batch of examples `indices`, every row padded on the right to `length` tokens."""
    b = len(indices)
    batch = {"input_ids": np.full((b, 2, length), data.pad_id, np.int32),
             "attention_mask": np.zeros((b, 2, length), np.int32),
             "loss_mask": np.zeros((b, 2, length), np.int32)}
    for row, i in enumerate(indices):
        for j in (0, 1):
            ids, mask = data.sequence(int(i), j)
            if len(ids) > length:
                raise ValueError(f"example {int(i)} response {j} has {len(ids)} tokens; the batch holds {length}")
            batch["input_ids"][row, j, :len(ids)] = ids
            batch["attention_mask"][row, j, :len(ids)] = 1
            batch["loss_mask"][row, j, :len(ids)] = mask
    batch["labels"] = data.labels[np.asarray(indices, np.int64)]
    batch["scores"] = data.scores[np.asarray(indices, np.int64)]
    return batch


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
                 num_epochs: int | None = None):
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
        self.bucket, self.num_epochs = bucket, num_epochs
        self.process_index, self.process_count = process_index, process_count
        self.steps_per_epoch = len(data) // batch_size
        self._lengths = data.lengths().max(axis=1)
        self.epoch, self.index = 0, 0

    def order(self, epoch: int) -> np.ndarray:
        """The example order of `epoch`: the same for every process and every restart."""
        if not self.shuffle:
            return np.arange(len(self.data))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.data))

    def global_indices(self, epoch: int, index: int) -> np.ndarray:
        return self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        indices = self.global_indices(self.epoch, self.index)
        length = bucket_length(int(self._lengths[indices].max()), self.bucket, self.data.config.max_total_tokens)
        share = self.batch_size // self.process_count
        batch = collate(self.data, indices[self.process_index * share:(self.process_index + 1) * share], length)
        self.index += 1
        if self.index == self.steps_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return batch

    def state(self) -> dict:
        """The position of the next batch, as a small JSON-able dict."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "shuffle": self.shuffle,
                "batch_size": self.batch_size, "num_examples": len(self.data)}

    def restore(self, state: dict) -> None:
        """Continues from `state`; refused if it was taken over other data, seed, order or batch size."""
        for key, mine in (("seed", self.seed), ("shuffle", self.shuffle), ("batch_size", self.batch_size),
                          ("num_examples", len(self.data))):
            if state.get(key) != mine:
                raise ConfigError(f"iterator state has {key}={state.get(key)!r}; this iterator has {key}={mine}, "
                                  "so it would not continue the same batches")
        epoch, index = state.get("epoch"), state.get("index")
        if not (isinstance(epoch, int) and isinstance(index, int) and epoch >= 0
                and 0 <= index < self.steps_per_epoch):
            raise ConfigError(f"iterator state epoch={epoch!r} index={index!r} is not a position in an epoch "
                              f"of {self.steps_per_epoch} batches")
        self.epoch, self.index = epoch, index
