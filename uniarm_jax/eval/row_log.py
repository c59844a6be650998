"""Finished rows of a long generation, kept on disk as they finish, so that an interrupted `uniarm
evaluate` generates again only what it had not finished (a study's grid runs for hours on a CPU).

The file is JSON lines: first the key (a digest of everything the tokens depend on: the encoded rows,
the α of each row, the sampling options and the models' identities), then one line per finished row
`{"row", "tokens", "seconds"}`. Row i samples with `seed + i` whatever rows it shares its steps with
(`generate_continuous`), so a row generated in a later process equals the one an uninterrupted run
makes. A file with another key (the ARM was retrained, the prompts changed) is started afresh; a last
line cut by a kill is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os


def digest(value) -> str:
    """sha256 of `value` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def model_identity(path: str) -> dict:
    """What identifies a model directory: each `.json` file's sha256, and each `.safetensors` file's
    size and sha256 of its first and last MiB (cheap for a 7B; retraining or converting changes them)."""
    files = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".json"):
            with open(os.path.join(path, name), "rb") as f:
                files[name] = hashlib.sha256(f.read()).hexdigest()
        elif name.endswith(".safetensors"):
            full = os.path.join(path, name)
            size = os.path.getsize(full)
            with open(full, "rb") as f:
                head = f.read(2**20)
                f.seek(max(0, size - 2**20))
                tail = f.read()
            files[name] = [size, hashlib.sha256(head + tail).hexdigest()]
    return {"path": os.path.abspath(path), "files": files}


class RowLog:
    """`done`: row -> (tokens, seconds) of the rows an earlier run finished under the same key."""

    def __init__(self, path: str, key: str):
        self.path, self.done = path, {}
        lines = open(path).read().split("\n") if os.path.isfile(path) else []
        if lines and lines[0] == json.dumps({"key": key}):
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the end of the file, or a line a kill cut short
                    break
                self.done[row["row"]] = (row["tokens"], row["seconds"])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:  # rewritten whole: a cut last line never stays in the middle
            f.write(json.dumps({"key": key}) + "\n")
            for row, (tokens, seconds) in sorted(self.done.items()):
                f.write(json.dumps({"row": row, "tokens": tokens, "seconds": seconds}) + "\n")

    def add(self, row: int, tokens: list[int], seconds: float) -> None:
        self.done[row] = (tokens, seconds)
        with open(self.path, "a") as f:
            f.write(json.dumps({"row": row, "tokens": tokens, "seconds": seconds}) + "\n")
            f.flush()
            os.fsync(f.fileno())
