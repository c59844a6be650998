"""Training metrics as JSON lines (and TensorBoard scalars), written by process 0 only."""

from __future__ import annotations

import json
import os

import jax
import numpy as np


class MetricsLog:
    """Metrics as JSON lines (and TensorBoard scalars), written by process 0 only."""

    def __init__(self, out_dir: str, tensorboard: bool):
        self.active = jax.process_index() == 0
        self.file = open(os.path.join(out_dir, "metrics.jsonl"), "a") if self.active else None
        self.tb = None
        if self.active and tensorboard:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.active:
            return
        self.file.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def named_metrics(metrics: dict, objectives: tuple) -> dict:
    """Flattens per-objective metric vectors into `accuracy/helpful`-style scalars."""
    out = {}
    for name, value in jax.device_get(metrics).items():
        value = np.asarray(value)
        if value.ndim == 0:
            out[name] = float(value)
        else:
            out.update({f"{name}/{obj}": float(v) for obj, v in zip(objectives, value)})
    return out
