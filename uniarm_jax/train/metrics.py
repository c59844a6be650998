"""Training metrics as JSON lines (and TensorBoard scalars), written by process 0 only."""

from __future__ import annotations

import json
import os

import jax
import numpy as np


class MetricsLog:
    """Metrics as JSON lines (and TensorBoard scalars), written by process 0 only."""

    def __init__(self, out_dir: str, tensorboard: bool, resumed_step: int = 0):
        """A resumed run (from the checkpoint at `resumed_step`) drops the rows logged after that step
        before it goes on, so every step is logged once (the steps redone log the same numbers)."""
        self.active = jax.process_index() == 0
        path = os.path.join(out_dir, "metrics.jsonl")
        if self.active and os.path.isfile(path):
            with open(path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resumed_step]
            with open(path, "w") as f:
                f.writelines(kept)
        self.file = open(path, "a") if self.active else None
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
