"""Prompt files: JSON lines with a `prompt` field, read for sampling, evaluation and data making."""

from __future__ import annotations

import json
import os

from uniarm_jax.errors import DataError, MissingFileError


def read_prompts(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise MissingFileError(f"prompts file {path!r} does not exist")
    prompts = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {line_no} is not valid JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise DataError(f"{path} line {line_no} has no string field 'prompt'; expected {{\"prompt\": ...}}")
            prompts.append(row["prompt"])
    if not prompts:
        raise DataError(f"{path} holds no prompts")
    return prompts
