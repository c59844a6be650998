"""Random preference pairs as the train step sees them (packed rows, data/batches.py) and as an oracle
sees them (each response after its prompt, a sequence of its own)."""

import numpy as np

from uniarm_jax.data.batches import pack_pair


def random_pairs(b: int, k: int, seed: int = 0, vocab: int = 96, prompt_len=(2, 6), response_len=(1, 8),
                 length: int | None = None, response_length: int | None = None, with_scores: bool = False):
    """`(batch, sequences)`: B pairs with prompts and responses of random lengths (so rows are padded
    differently), packed into rows of `length` (default: the longest) with `response_length` targets;
    `sequences[b][j]` is pair b's prompt + response j and `prompt_lens[b]` its prompt length."""
    rng = np.random.RandomState(seed)
    prompts = [rng.randint(3, vocab, rng.randint(prompt_len[0], prompt_len[1] + 1)) for _ in range(b)]
    responses = [[rng.randint(3, vocab, rng.randint(response_len[0], response_len[1] + 1)) for _ in (0, 1)]
                 for _ in range(b)]
    length = length or max(len(p) + len(r0) + len(r1) for p, (r0, r1) in zip(prompts, responses))
    response_length = response_length or max(len(r) for rs in responses for r in rs)
    rows = [pack_pair(p, rs, length, response_length, 0) for p, rs in zip(prompts, responses)]
    batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
    batch["labels"] = rng.randint(0, 2, (b, k)).astype(np.int32)
    batch["scores"] = rng.randn(b, 2, k).astype(np.float32) if with_scores else np.full((b, 2, k), np.nan, np.float32)
    sequences = [[np.concatenate([p, r]) for r in rs] for p, rs in zip(prompts, responses)]
    return batch, {"sequences": sequences, "prompt_lens": [len(p) for p in prompts]}
