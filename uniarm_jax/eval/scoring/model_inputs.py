"""Turning (prompt, response) pairs into token batches for the model-based scorers."""

from __future__ import annotations

import os
import re

import numpy as np

from uniarm_jax.errors import MissingFileError, ScoringError
from uniarm_jax.eval.scoring.checks import short_text


def format_text(fmt: str, prompt: str, response: str) -> str:
    # One pass, not str.format or chained replaces: prompts and responses may hold braces or "{response}".
    return re.sub(r"\{(prompt|response)\}", lambda m: prompt if m.group(1) == "prompt" else response, fmt)


def encode_texts(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
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


def pad_rows(rows: list[list[int]], n_rows: int, length: int, pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((n_rows, length), pad_id, np.int32)
    mask = np.zeros((n_rows, length), np.int32)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(length - len(row), length)
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def length_batches(rows: list[list[int]], batch_size: int):
    """Index chunks of similar lengths (sorted), so padding stays small."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def encode_pairs(tokenizer, fmt: str, prompts: list[str], responses: list[str], max_length: int,
                 name: str) -> list[list[int]]:
    """Each (prompt, response) framed by `fmt` and tokenised (see `encode_texts`); none may be empty."""
    rows = encode_texts(tokenizer, [format_text(fmt, p, r) for p, r in zip(prompts, responses)], max_length)
    check_encoded(name, rows, prompts)
    return rows


def check_encoded(name: str, rows, prompts) -> None:
    for row, prompt in zip(rows, prompts):
        if not row:
            raise ScoringError(f"objective {name!r}: the text for prompt {short_text(prompt)!r} has no tokens; "
                               "expected at least one to read the score at")


def local_dir(path, what: str, name: str) -> str:
    if not isinstance(path, str) or not os.path.isdir(path):
        raise MissingFileError(f"{what} directory {path!r} of objective {name!r} does not exist; "
                                "expected a local Hugging Face model directory")
    return path


def load_scorer_tokenizer(path: str, name: str):
    from transformers import AutoTokenizer

    local_dir(path, "tokenizer", name)
    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
