"""`uniarm make-data`: the small-scale task's preference pairs, made offline from the base's own samples.

As PARM built its data: for every prompt the base model samples responses (seeded temperature
sampling, each row its own seed; `samples` of them, 2 by default, paired in order), every objective
scores both of a pair, and each objective's label is the better-scored response; the scores are kept,
so the pairs serve every loss reading. The rows go out in the general `multi` schema (`prompt, response_0,
response_1, label_<o>, score_<o>_0, score_<o>_1, ended_0, ended_1`), checked by reading them back with the training
loader, and split by prompt (a seeded `split_indices` of the prompts) into train / dev / test files,
with each part's prompts in `<part>_prompts.jsonl`.

Choices: a response is cut after its last complete sentence within the token budget (kept whole if
it has none), so lengths vary by whole sentences; `ended_<i>` says whether the base stopped by itself
(EOS), and training appends an EOS only to a response that did (data/pairs.py says why). A pair
whose two responses are the same text carries no preference and is
dropped; a tie on one objective is labelled by a seeded coin (counted in `summary.json`), so an
objective that often ties (tone, for two neutral answers) teaches "no difference" on average instead
of a bias to response_0. With `degeneracy`, a degenerate response (run-on repetition, near-empty, or
never ended by EOS: `scoring/degeneracy.py`) scores each objective's failure value, so it loses every
objective it does not tie; `summary.json` reports how many responses ended and how many were degenerate.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from uniarm_jax import defaults
from uniarm_jax.data.pairs import load_preferences, split_indices
from uniarm_jax.data.prompts import read_prompts
from uniarm_jax.data.tokenization import encode_prompts
from uniarm_jax.decode.generate import generate_continuous
from uniarm_jax.decode.sampling import Sampler
from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.scoring import make_scorers, score_responses, scorer_specs
from uniarm_jax.eval.scoring.degeneracy import DegeneracyRule
from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer

PROMPTS = os.path.join(defaults.REPO, "data", "study", "prompts.jsonl")  # the study's 720 (docs/results.md)
SPLITS = ("train", "dev", "test")
PAIR_SAMPLER = Sampler(temperature=1.0, top_p=0.95)  # two different samples per prompt, as PARM's data
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def complete_sentences(text: str) -> str:
    """`text` up to the end of its last complete sentence; the whole text if it has no sentence end."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[:ends[-1]] if ends else text


def sample_responses(handle, tokenizer, prompts: list[str], *, samples: int = 2, template: str,
                     max_new_tokens: int, sampler: Sampler, seed: int, batch_size: int,
                     progress=None) -> list[list[tuple[str, bool]]]:
    """`samples` responses per prompt, sampled by the base alone through `batch_size` decode slots
    (`generate_continuous`: row r, sample r % samples of prompt r // samples, with seed + r): each
    `(text, ended)`, the text cut after its last complete sentence, `ended` whether the model stopped
    by itself (EOS) within `max_new_tokens`."""
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1 (rows sampled at once)")
    if samples < 2 or samples % 2:
        raise ConfigError(f"{samples} samples per prompt; expected an even number of at least 2 (pairs of them)")
    encoded = encode_prompts(tokenizer, prompts, template, max_new_tokens, handle.config.max_position_embeddings)
    rows = [ids for ids in encoded for _ in range(samples)]
    eos = set(handle.config.eos_token_ids)
    out = {}
    for r, tokens, _ in generate_continuous(handle, [], rows, max_new_tokens, slots=batch_size, seed=seed,
                                            sampler=sampler, pad_id=tokenizer.pad_token_id):
        out[r] = (complete_sentences(tokenizer.decode(tokens, skip_special_tokens=True).strip()),
                  bool(tokens) and tokens[-1] in eos)
        if progress is not None and len(out) % samples == 0:
            progress(len(out) // samples, len(prompts))
    return [[out[r] for r in range(i, i + samples)] for i in range(0, len(rows), samples)]


def label_pairs(prompts: list[str], pairs: list[tuple[str, str]], scorers, seed: int,
                degenerate=None, ended=None) -> tuple[list[dict], dict]:
    """Rows of the multi schema and counts of what happened (identical pairs dropped, ties per objective).
    `degenerate` (a reason or None per response, `[pair][0 or 1]`) gives a flagged response every
    objective's failure value, so degenerate text never wins a pair; `ended` (a bool per response, the
    same layout) becomes the rows' `ended_0, ended_1`."""
    names = [s.name for s in scorers]
    flags = (None, None) if degenerate is None else tuple([d[j] for d in degenerate] for j in (0, 1))
    s0 = score_responses(scorers, prompts, [p[0] for p in pairs], flags[0])
    s1 = score_responses(scorers, prompts, [p[1] for p in pairs], flags[1])
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
        if ended is not None:
            row["ended_0"], row["ended_1"] = bool(ended[i][0]), bool(ended[i][1])
        rows.append(row)
    counts["pairs"] = len(rows)
    return rows, counts


def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_splits(rows: list[dict], prompt_of_row: list[int], prompts: list[str], part_of: dict[int, str],
                 out_dir: str) -> dict[str, str]:
    """`all.jsonl` read back by the training loader (so the files are known to load), then split by
    prompt (`part_of`: prompt index -> part), each prompt's pairs in its part, so no test prompt is
    ever trained on and the parts do not move when a pair is dropped. Each part's prompts, once each,
    go to `<part>_prompts.jsonl` (what `uniarm evaluate` reads)."""
    os.makedirs(out_dir, exist_ok=True)
    everything = os.path.join(out_dir, "all.jsonl")
    write_jsonl(everything, rows)
    load_preferences(everything, "multi")
    paths = {}
    for name in SPLITS:
        paths[name] = os.path.join(out_dir, f"{name}.jsonl")
        write_jsonl(paths[name], [row for row, p in zip(rows, prompt_of_row) if part_of[p] == name])
        write_jsonl(os.path.join(out_dir, f"{name}_prompts.jsonl"),
                    [{"prompt": prompt} for i, prompt in enumerate(prompts) if part_of[i] == name])
    return paths


def make_data(base_dir: str, out_dir: str, *, prompts_file: str = PROMPTS,
              objectives: tuple = ("readability", "relevance", "vader"), limit: int | None = None,
              splits: tuple[float, ...] = (0.8, 0.05, 0.15), max_new_tokens: int = defaults.MAX_NEW_TOKENS,
              samples: int = 4, degeneracy=None, sampler: Sampler = PAIR_SAMPLER, seed: int = 0,
              template: str = defaults.TEMPLATE, batch_size: int = 32, dtype: str = defaults.DTYPE,
              log=print) -> dict:
    """`uniarm make-data`: the pairs, labelled and split into `out_dir`; returns the summary it also
    writes. `objectives` are scorer names or specs (`scorer_specs`); `samples` per prompt make
    `samples / 2` pairs; `degeneracy` (a `DegeneracyRule` spec, e.g. True) makes degenerate responses
    lose on every objective."""
    import datasets

    datasets.disable_progress_bars()  # the read-back of all.jsonl is not worth a progress bar

    if len(splits) != len(SPLITS):
        raise ConfigError(f"splits {list(splits)} needs three fractions train,dev,test, e.g. 0.8,0.05,0.15")
    rule = DegeneracyRule.from_spec(degeneracy)
    specs = scorer_specs(list(objectives))
    prompts = read_prompts(prompts_file)
    if limit:
        prompts = prompts[:limit]
    part_of = {int(i): name for name, indices in split_indices(len(prompts), list(splits), seed, SPLITS,
                                                                f"{prompts_file} (prompts)").items() for i in indices}
    scorers = make_scorers(specs)  # after the cheap checks: a library scorer may load a model
    handle = load_pretrained(base_dir, dtype=dtype)
    tokenizer = load_tokenizer(base_dir)
    responses = sample_responses(handle, tokenizer, prompts, samples=samples, template=template,
                                 max_new_tokens=max_new_tokens, sampler=sampler, seed=seed, batch_size=batch_size,
                                 progress=lambda done, total: log(f"sampled {done}/{total} prompts"))
    prompt_of_pair = [i for i in range(len(prompts)) for _ in range(samples // 2)]
    pairs = [(r[j][0], r[j + 1][0]) for r in responses for j in range(0, samples, 2)]
    ended = [(r[j][1], r[j + 1][1]) for r in responses for j in range(0, samples, 2)]
    reasons = None if rule is None else [tuple(rule.reasons(p, e)) for p, e in zip(pairs, ended)]
    rows, counts = label_pairs([prompts[i] for i in prompt_of_pair], pairs, scorers, seed, reasons, ended)
    kept = [i for i, (r0, r1) in zip(prompt_of_pair, pairs) if r0 != r1]
    paths = write_splits(rows, kept, prompts, part_of, out_dir)
    counts["prompts"] = len(prompts)
    flat_ended = [e for pair in ended for e in pair]
    summary = {"base": base_dir, "prompts_file": prompts_file, "objectives": [s.name for s in scorers],
               "template": template, "max_new_tokens": max_new_tokens, "temperature": sampler.temperature,
               "top_p": sampler.top_p, "seed": seed, "samples_per_prompt": samples,
               "splits": dict(zip(SPLITS, splits)),
               "rows": {name: sum(1 for _ in open(p)) for name, p in paths.items()}} | counts
    summary["ended_share"] = float(np.mean(flat_ended))
    if reasons is not None:
        flat = [why for pair in reasons for why in pair]
        summary["degenerate_share"] = float(np.mean([bool(w) for w in flat]))
        summary["degenerate_reasons"] = {w: flat.count(w) for w in sorted({w for w in flat if w})}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log(json.dumps(summary))
    return summary
