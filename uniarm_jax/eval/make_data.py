"""`uniarm make-data`: the small-scale task's preference pairs, made offline from the base's own samples.

As PARM built its data: for every prompt the base model samples two responses (seeded temperature
sampling, both rows in one batch so they differ), every objective scores both, and each objective's
label is the better-scored response; the scores are kept, so the pairs serve every loss reading. The
rows go out in the general `multi` schema (`prompt, response_0, response_1, label_<o>,
score_<o>_0, score_<o>_1`), checked by reading them back with the training loader, and split by
`data.split_data` into seeded train / dev / test files.

Choices: a response is cut after its last complete sentence within the token budget (kept whole if
it has none), so every response ends the way the EOS appended in training says it does and lengths
vary by whole sentences; a 135M model rarely stops by itself within a few dozen tokens, and without
the cut every response would be exactly the budget long and brevity could not be learnt. A pair
whose two responses are the same text carries no preference and is dropped; a tie on
one objective is labelled by a seeded coin (counted in `summary.json`), so an objective that often
ties (tone, for two neutral answers) teaches "no difference" on average instead of a bias to
response_0.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from uniarm_jax import defaults
from uniarm_jax.data.pairs import load_preferences, split_data
from uniarm_jax.data.prompts import read_prompts
from uniarm_jax.data.tokenization import encode_prompts
from uniarm_jax.decode.generate import generate_in_chunks
from uniarm_jax.decode.sampling import Sampler
from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.scoring import make_scorers, score_responses
from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer

PROMPTS = os.path.join(defaults.REPO, "data", "small_task_prompts.jsonl")
SPLITS = ("train", "dev", "test")
PAIR_SAMPLER = Sampler(temperature=1.0, top_p=0.95)  # two different samples per prompt, as PARM's data
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def complete_sentences(text: str) -> str:
    """`text` up to the end of its last complete sentence; the whole text if it has no sentence end."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[:ends[-1]] if ends else text


def sample_pairs(handle, tokenizer, prompts: list[str], *, template: str, max_new_tokens: int,
                 sampler: Sampler, seed: int, batch_size: int, progress=None) -> list[tuple[str, str]]:
    """Two sampled responses per prompt, sampled by the base alone `batch_size` rows at a time."""
    if batch_size < 2 or batch_size % 2:
        raise ConfigError(f"batch size {batch_size} must be even and at least 2 (two samples per prompt)")
    encoded = encode_prompts(tokenizer, prompts, template, max_new_tokens, handle.config.max_position_embeddings)
    rows = [ids for ids in encoded for _ in range(2)]
    texts = []
    for _, tokens, _ in generate_in_chunks(handle, [], rows, max_new_tokens, chunk_size=batch_size, seed=seed,
                                           sampler=sampler, pad_id=tokenizer.pad_token_id):
        texts += [complete_sentences(tokenizer.decode(t, skip_special_tokens=True).strip()) for t in tokens]
        if progress is not None:
            progress(len(texts) // 2, len(prompts))
    return list(zip(texts[0::2], texts[1::2]))


def label_pairs(prompts: list[str], pairs: list[tuple[str, str]], scorers, seed: int) -> tuple[list[dict], dict]:
    """Rows of the multi schema and counts of what happened (identical pairs dropped, ties per objective)."""
    names = [s.name for s in scorers]
    s0 = score_responses(scorers, prompts, [p[0] for p in pairs])
    s1 = score_responses(scorers, prompts, [p[1] for p in pairs])
    coins = np.random.default_rng(seed).integers(0, 2, size=s0.shape)
    rows, counts = [], {"prompts": len(prompts), "identical_dropped": 0} | {f"ties_{n}": 0 for n in names}
    for i, (prompt, (r0, r1)) in enumerate(zip(prompts, pairs)):
        if r0 == r1:
            counts["identical_dropped"] += 1
            continue
        row = {"prompt": prompt, "response_0": r0, "response_1": r1}
        for j, name in enumerate(names):
            tie = s0[i, j] == s1[i, j]
            counts[f"ties_{name}"] += int(tie)
            row[f"label_{name}"] = int(coins[i, j]) if tie else int(s1[i, j] > s0[i, j])
            row[f"score_{name}_0"], row[f"score_{name}_1"] = float(s0[i, j]), float(s1[i, j])
        rows.append(row)
    counts["pairs"] = len(rows)
    return rows, counts


def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_splits(rows: list[dict], out_dir: str, sizes, seed: int) -> dict[str, str]:
    """`all.jsonl` read back by the training loader (so the files are known to load), then split."""
    os.makedirs(out_dir, exist_ok=True)
    everything = os.path.join(out_dir, "all.jsonl")
    write_jsonl(everything, rows)
    parts = split_data(load_preferences(everything, "multi"), sizes, seed, names=SPLITS)
    paths = {}
    for name, part in parts.items():
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        write_jsonl(paths[name], [rows[ex.row - 1] for ex in part.examples])
    return paths


def make_data(base_dir: str, out_dir: str, *, prompts_file: str = PROMPTS,
              objectives: tuple[str, ...] = ("brevity", "informativeness", "tone"), limit: int | None = None,
              splits: tuple[float, ...] = (0.8, 0.05, 0.15), max_new_tokens: int = defaults.SMALL_TASK_NEW_TOKENS,
              sampler: Sampler = PAIR_SAMPLER, seed: int = 0, template: str = defaults.TEMPLATE,
              batch_size: int = 32, dtype: str = defaults.DTYPE, log=print) -> dict:
    """`uniarm make-data`: the pairs, labelled and split into `out_dir`; returns the summary it also writes."""
    import datasets

    datasets.disable_progress_bars()  # the read-back of all.jsonl is not worth a progress bar

    if len(splits) != len(SPLITS):
        raise ConfigError(f"splits {list(splits)} needs three fractions train,dev,test, e.g. 0.8,0.05,0.15")
    scorers = make_scorers([{"kind": "programmatic", "function": n} for n in objectives])
    prompts = read_prompts(prompts_file)
    if limit:
        prompts = prompts[:limit]
    handle = load_pretrained(base_dir, dtype=dtype)
    tokenizer = load_tokenizer(base_dir)
    pairs = sample_pairs(handle, tokenizer, prompts, template=template, max_new_tokens=max_new_tokens,
                         sampler=sampler, seed=seed, batch_size=batch_size,
                         progress=lambda done, total: log(f"sampled {done}/{total} prompts"))
    rows, counts = label_pairs(prompts, pairs, scorers, seed)
    paths = write_splits(rows, out_dir, list(splits), seed)
    summary = {"base": base_dir, "prompts_file": prompts_file, "objectives": [s.name for s in scorers],
               "template": template, "max_new_tokens": max_new_tokens, "temperature": sampler.temperature,
               "top_p": sampler.top_p, "seed": seed, "splits": dict(zip(SPLITS, splits)),
               "rows": {name: sum(1 for _ in open(p)) for name, p in paths.items()}} | counts
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log(json.dumps(summary))
    return summary
