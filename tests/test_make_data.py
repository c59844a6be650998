"""`uniarm make-data`: sentence cutting, labelling against the scorers called directly (degenerate
responses failing), sampling against `guided_generate` called directly on the batches the command
builds, and the command end to end on a tiny word-level Llama (files, splits by prompt, several pairs
per prompt, summary, seeds), with its refusals."""

import json

import numpy as np
import pytest

import uniarm_jax
from tests.cli_runner import run_uniarm as uniarm
from tests.synthetic import vocabulary
from tests.tiny_models import make_tiny_word_llama
from uniarm_jax.data.pairs import load_preferences, split_indices
from uniarm_jax.data.tokenization import TokenizeConfig, encode_prompt
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.decode.sampling import Sampler
from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.make_data import SPLITS, complete_sentences, label_pairs, sample_responses
from uniarm_jax.eval.scoring import brevity, informativeness, make_scorers, tone
from uniarm_jax.eval.scoring.degeneracy import DegeneracyRule

OBJECTIVES = {"brevity": brevity, "informativeness": informativeness, "tone": tone}

# 11 prompts: 22 sampled rows through 4 decode slots (rows end at different steps and free their slot)
PROMPTS = ["Name some fruit.", "What is in the basket?", "List what you ate.", "Say six words.",
           "What fruit is in the basket?", "Name six words.", "Say what you ate.", "List some fruit.",
           "What is the fruit?", "Name what is in the basket.", "Say some words."]
MAX_NEW, BATCH, TOP_P = 6, 4, 0.95  # top-p: the command's default


def write_prompts(path, prompts):
    with open(path, "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}) + "\n")
    return path


def make_data(root, out, seed, *extra):
    return uniarm("make-data", "--base", root / "base", "--out", out, "--prompts", root / "prompts.jsonl",
                  "--template", "raw", "--max-new-tokens", MAX_NEW, "--batch-size", BATCH, "--temperature", 1.0,
                  "--splits", "0.5,0.25,0.25", "--seed", seed, "--objectives", ",".join(OBJECTIVES), "--samples", 2,
                  *extra)  # the cheap built-in scorers; a later flag in `extra` wins (argparse keeps the last)


def read_rows(path):
    return [json.loads(line) for line in open(path)]


def oracle_responses(base_dir, prompts, seed, samples=2):
    """What the command should sample, built by hand: `samples` copies of each encoded prompt, row r
    generated alone by `guided_generate` with seed + r; texts decoded without specials, stripped, cut
    after the last sentence; with whether each row ended by EOS. Returns `[prompt][sample] -> (text,
    ended)`."""
    handle = uniarm_jax.load_pretrained(str(base_dir))
    tokenizer = uniarm_jax.load_tokenizer(str(base_dir))
    limit = handle.config.max_position_embeddings - MAX_NEW
    tcfg = TokenizeConfig(template="raw", max_prompt_tokens=limit, max_total_tokens=limit + MAX_NEW)
    rows = []
    for p in prompts:
        ids, _, cut = encode_prompt(tokenizer, p, tcfg)
        assert not cut and ids[0] == tokenizer.bos_token_id
        rows += [ids] * samples
    texts = []
    for r, ids in enumerate(rows):
        (tokens,), _ = guided_generate(handle, [], [ids], MAX_NEW, sampler=Sampler(1.0, 0, TOP_P), seed=seed + r,
                                       pad_id=tokenizer.pad_token_id)
        assert len(tokens) <= MAX_NEW
        texts.append((complete_sentences(tokenizer.decode(tokens, skip_special_tokens=True).strip()),
                      bool(tokens) and tokens[-1] == tokenizer.eos_token_id))
    return [texts[i:i + samples] for i in range(0, len(texts), samples)]


def oracle_pairs(base_dir, prompts, seed, samples=2):
    """The oracle's pairs of texts: samples (0, 1), (2, 3), ... of each prompt, in prompt order."""
    return [(r[j][0], r[j + 1][0]) for r in oracle_responses(base_dir, prompts, seed, samples)
            for j in range(0, samples, 2)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The base, the prompts, and three runs of the command: seed 0 twice, seed 1 once."""
    root = tmp_path_factory.mktemp("make_data")
    make_tiny_word_llama(root / "base", vocabulary())
    write_prompts(root / "prompts.jsonl", PROMPTS)
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        res = make_data(root, root / name, seed)
        assert res.returncode == 0, res.stderr
        runs[name] = res
    return root, runs


# ----------------------------------------------------------------------------- complete_sentences

@pytest.mark.parametrize("text,expected", [
    ("no sentence end here", "no sentence end here"),              # kept whole
    ("", ""),
    ("First one. Second fragment", "First one."),                  # trailing fragment cut
    ("One. Two. three and", "One. Two."),                           # up to the LAST complete sentence
    ('He said "stop." And then', 'He said "stop."'),                # closing quote belongs to the sentence
    ("(It ended.) Then", "(It ended.)"),                            # closing bracket too
    ("She asked 'why?' and left", "She asked 'why?'"),
    ("Wow! Really? Yes", "Wow! Really?"),                           # ! and ? end sentences
    ("Really?! ok", "Really?!"),
    ("Done.", "Done."),
    ("Line one.\nLine two", "Line one."),                          # any whitespace after the end
    ("Trailing space. ", "Trailing space."),
    ("Pi is 3.14 and e is 2.72", "Pi is 3.14 and e is 2.72"),      # a decimal point is no sentence end
    ("Pi is 3.14. Next", "Pi is 3.14."),
    ("Wait... what", "Wait..."),
])
def test_complete_sentences(text, expected):
    assert complete_sentences(text) == expected
    assert complete_sentences(expected) == expected  # idempotent


# ----------------------------------------------------------------------------------- label_pairs

LABEL_PROMPTS = ["What is a cat?", "Tell me about rain.", "Say hi.", "Describe the sea.", "Any news?",
                 "Is it late?"]
LABEL_PAIRS = [
    ("A cat is a small furry animal that purrs.", "Cats are great, friendly and lovely pets!"),
    ("Rain is water falling from clouds, which is awful and sad.", "Rain."),
    ("Hi!", "Hi!"),                                   # identical: no preference, dropped
    ("The sea is big.", "The sea is blue."),          # ties on all three objectives
    ("No news today.", "Good news: the market rose."),
    ("Yes.", "No."),                                  # stopwords only: ties on all three
]
SCORERS = [{"kind": "programmatic", "function": name} for name in OBJECTIVES]


def direct_scores(prompt, response):
    return {name: fn(prompt, response) for name, fn in OBJECTIVES.items()}


def test_label_pairs_labels_the_better_scored_response():
    scorers = make_scorers(SCORERS)
    rows, counts = label_pairs(LABEL_PROMPTS, LABEL_PAIRS, scorers, seed=0)
    kept = [(p, pair) for p, pair in zip(LABEL_PROMPTS, LABEL_PAIRS) if pair[0] != pair[1]]
    assert [r["prompt"] for r in rows] == [p for p, _ in kept]
    assert counts["prompts"] == 6 and counts["identical_dropped"] == 1 and counts["pairs"] == 5
    ties = {name: 0 for name in OBJECTIVES}
    decided = 0
    for row, (prompt, (r0, r1)) in zip(rows, kept):
        assert (row["response_0"], row["response_1"]) == (r0, r1)
        s0, s1 = direct_scores(prompt, r0), direct_scores(prompt, r1)
        for name in OBJECTIVES:
            assert row[f"score_{name}_0"] == s0[name] and row[f"score_{name}_1"] == s1[name]
            if s0[name] == s1[name]:
                ties[name] += 1
                assert row[f"label_{name}"] in (0, 1)
            else:
                decided += 1
                assert row[f"label_{name}"] == int(np.argmax([s0[name], s1[name]])), (prompt, name)
    assert counts == {"prompts": 6, "identical_dropped": 1, "pairs": 5} | {f"ties_{n}": ties[n] for n in OBJECTIVES}
    assert ties == {"brevity": 2, "informativeness": 2, "tone": 2} and decided == 9
    # a few by hand, so the direct oracle is checked too: the shorter answer is briefer, the one with new
    # content words more informative, the one with positive words better in tone
    cat, rain, news = rows[0], rows[1], rows[3]
    assert (cat["label_brevity"], cat["label_informativeness"], cat["label_tone"]) == (1, 1, 1)
    assert (rain["label_brevity"], rain["label_informativeness"], rain["label_tone"]) == (1, 0, 1)
    assert (news["label_brevity"], news["label_informativeness"], news["label_tone"]) == (0, 1, 1)


def test_label_pairs_ties_are_a_seeded_coin():
    scorers = make_scorers(SCORERS)
    tied = [(i, name) for i in (2, 4) for name in OBJECTIVES]  # rows (after the drop) that tie everywhere
    first, counts = label_pairs(LABEL_PROMPTS, LABEL_PAIRS, scorers, seed=3)
    again, counts_again = label_pairs(LABEL_PROMPTS, LABEL_PAIRS, scorers, seed=3)
    assert first == again and counts == counts_again  # same seed, same labels
    coins, decided = [], set()
    for seed in range(200):
        rows, c = label_pairs(LABEL_PROMPTS, LABEL_PAIRS, scorers, seed=seed)
        assert c == counts  # the counts do not depend on the seed
        coins += [rows[i][f"label_{name}"] for i, name in tied]
        decided.add(tuple(r[f"label_{n}"] for j, r in enumerate(rows) for n in OBJECTIVES if (j, n) not in tied))
    assert len(decided) == 1  # a decided label never depends on the seed
    # 1200 tosses: a fair coin's mean is 0.5 ± 0.0144 (one sd); a bias to response_0 would give 0
    assert abs(np.mean(coins) - 0.5) < 0.05


# ----------------------------------------------------------------------------------- sample_pairs

def test_sample_responses_equals_guided_generate_on_the_batches(setup):
    root, _ = setup
    handle = uniarm_jax.load_pretrained(str(root / "base"))
    tokenizer = uniarm_jax.load_tokenizer(str(root / "base"))
    progress = []

    def sample(tok, prompts=PROMPTS, samples=2, **kw):
        return sample_responses(handle, tok, prompts, samples=samples, template="raw", max_new_tokens=MAX_NEW,
                                sampler=Sampler(1.0, 0, TOP_P), seed=5, batch_size=BATCH, **kw)

    responses = sample(tokenizer, progress=lambda done, total: progress.append((done, total)))
    assert responses == oracle_responses(root / "base", PROMPTS, seed=5)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress) and progress[-1] == (11, 11)
    assert sum(r[0] != r[1] for r in responses) >= 9  # the two rows of a prompt are sampled apart
    ended = [e for r in responses for _, e in r]
    assert 0 < sum(ended) < len(ended)  # some rows stop by EOS within 6 tokens, some do not: both flags seen
    # a prefix of the prompts gets the same responses: each row is its own seed's, whatever shares its steps
    assert sample(tokenizer, PROMPTS[:3]) == responses[:3]
    # whitespace around a decoded text is stripped (this word-level tokenizer never makes any itself)
    assert sample(Spacey(tokenizer)) == responses
    # four samples a prompt: rows 4i .. 4i + 3 are prompt i's
    four = sample(tokenizer, samples=4)
    assert four == oracle_responses(root / "base", PROMPTS, seed=5, samples=4) and all(len(r) == 4 for r in four)
    with pytest.raises(ConfigError, match="3 samples per prompt; expected an even number"):
        sample(tokenizer, samples=3)


class Spacey:
    """A tokenizer whose decoded texts come with whitespace around them."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def decode(self, ids, **kwargs):
        return " \n " + self._tokenizer.decode(ids, **kwargs) + "  \n"


# ------------------------------------------------------------------------------ the command, end to end

def test_make_data_writes_loadable_labelled_splits(setup):
    root, runs = setup
    out = root / "a"
    assert {p.name for p in out.iterdir()} == {"all.jsonl", "summary.json"} | {
        f"{name}{end}" for name in SPLITS for end in (".jsonl", "_prompts.jsonl")}
    everything = read_rows(out / "all.jsonl")
    parts = {name: read_rows(out / f"{name}.jsonl") for name in SPLITS}

    # the responses are the base's own samples: the oracle's pairs, identical ones dropped, in prompt order
    responses = oracle_responses(root / "base", PROMPTS, seed=0)
    pairs = oracle_pairs(root / "base", PROMPTS, seed=0)
    kept = [(p, pair) for p, pair in zip(PROMPTS, pairs) if pair[0] != pair[1]]
    assert [(r["prompt"], (r["response_0"], r["response_1"])) for r in everything] == kept
    # and each response's ended flag is whether the oracle's sample stopped by EOS
    ended = [(a[1], b[1]) for (a, b), pair in zip(responses, pairs) if pair[0] != pair[1]]
    assert [(r["ended_0"], r["ended_1"]) for r in everything] == ended
    assert {e for pair in ended for e in pair} == {True, False}  # both kinds occur, so the check can fail

    # every row: scores as the scorers give them, labels that pick the strictly better response
    ties = {name: 0 for name in OBJECTIVES}
    for row in everything:
        assert set(row) == {"prompt", "response_0", "response_1", "ended_0", "ended_1"} | {
            f"{what}_{n}{end}" for n in OBJECTIVES for what, end in (("label", ""), ("score", "_0"), ("score", "_1"))}
        for name, fn in OBJECTIVES.items():
            s0, s1 = row[f"score_{name}_0"], row[f"score_{name}_1"]
            assert (s0, s1) == (fn(row["prompt"], row["response_0"]), fn(row["prompt"], row["response_1"]))
            if s0 == s1:
                ties[name] += 1
                assert row[f"label_{name}"] in (0, 1)
            else:
                assert row[f"label_{name}"] == int(s1 > s0)
    tone_labels = [r["label_tone"] for r in everything]
    assert ties["tone"] == len(everything) and 0 < sum(tone_labels) < len(tone_labels)  # no word of tone: coins

    # every file loads with the training loader, and agrees with its JSON
    for name, rows in [("all", everything), *parts.items()]:
        data = load_preferences(str(out / f"{name}.jsonl"), "multi")
        assert data.objectives == tuple(OBJECTIVES) and len(data) == len(rows)
        np.testing.assert_array_equal(data.labels(), [[r[f"label_{n}"] for n in OBJECTIVES] for r in rows])
        np.testing.assert_allclose(data.scores(), [[[r[f"score_{n}_{j}"] for n in OBJECTIVES] for j in (0, 1)]
                                                   for r in rows], rtol=1e-6)  # loader keeps float32

    # disjoint splits whose union is all.jsonl (prompts are distinct, so a row is known by its prompt)
    keys = {name: [r["prompt"] for r in rows] for name, rows in parts.items()}
    assert sum(map(len, keys.values())) == len(set().union(*map(set, keys.values())))
    assert sorted(json.dumps(r, sort_keys=True) for rows in parts.values() for r in rows) == \
        sorted(json.dumps(r, sort_keys=True) for r in everything)
    # and they follow the seeded split of the prompts (kept pairs in prompt order), whatever was dropped
    by_prompt = split_indices(len(PROMPTS), (0.5, 0.25, 0.25), 0, SPLITS)
    assert [len(v) for v in by_prompt.values()] == [6, 2, 3]  # ends round(5.5) = 6, round(8.25) = 8, 11
    assert keys == {name: [p for p, _ in kept if PROMPTS.index(p) in set(by_prompt[name])] for name in SPLITS}
    # each part's prompts once each, in the prompts file's order, dropped pairs or not
    assert {name: [r["prompt"] for r in read_rows(out / f"{name}_prompts.jsonl")] for name in SPLITS} == {
        name: [PROMPTS[i] for i in sorted(by_prompt[name])] for name in SPLITS}
    n = len(everything)

    summary = json.load(open(out / "summary.json"))
    assert summary["prompts"] == len(PROMPTS)
    assert summary["pairs"] == n and summary["pairs"] + summary["identical_dropped"] == summary["prompts"]
    assert summary["identical_dropped"] == sum(r0 == r1 for r0, r1 in pairs)
    assert {n_: summary[f"ties_{n_}"] for n_ in OBJECTIVES} == ties
    assert summary["rows"] == {s: len(parts[s]) for s in SPLITS}
    assert summary["objectives"] == list(OBJECTIVES) and summary["seed"] == 0 and summary["template"] == "raw"
    assert summary["splits"] == {"train": 0.5, "dev": 0.25, "test": 0.25} and summary["top_p"] == TOP_P
    assert summary["samples_per_prompt"] == 2 and "degenerate_share" not in summary  # the rule is off by default
    assert summary["ended_share"] == np.mean([e for r in responses for _, e in r])
    assert "sampled 11/11 prompts" in runs["a"].stdout


def test_make_data_pairs_more_samples_by_prompt_and_degenerate_text_loses(setup, tmp_path):
    root, _ = setup
    res = make_data(root, tmp_path / "out", 0, "--samples", 4, "--degeneracy")
    assert res.returncode == 0, res.stderr
    responses = oracle_responses(root / "base", PROMPTS, seed=0, samples=4)
    rule, scorers = DegeneracyRule(), make_scorers(SCORERS)
    expected = []  # (prompt, pair, reasons): samples (0, 1) and (2, 3) of each prompt
    for prompt, r in zip(PROMPTS, responses):
        for j in (0, 2):
            pair = (r[j][0], r[j + 1][0])
            if pair[0] != pair[1]:
                expected.append((prompt, pair, (rule.reason(*r[j]), rule.reason(*r[j + 1]))))
    everything = read_rows(tmp_path / "out" / "all.jsonl")
    assert [(r["prompt"], (r["response_0"], r["response_1"])) for r in everything] == [e[:2] for e in expected]
    flagged = 0
    for row, (prompt, pair, reasons) in zip(everything, expected):
        for j, (text, why) in enumerate(zip(pair, reasons)):
            flagged += bool(why)
            for scorer, (name, fn) in zip(scorers, OBJECTIVES.items()):
                assert row[f"score_{name}_{j}"] == (scorer.failure if why else fn(prompt, text)), (prompt, j, why)
    assert 0 < flagged < 2 * len(everything)  # both kinds are seen (most 6-token answers never end)
    # a prompt's two pairs share its split
    for name in SPLITS:
        mine = {r["prompt"] for r in read_rows(tmp_path / "out" / f"{name}.jsonl")}
        assert all(not mine & {r["prompt"] for r in read_rows(tmp_path / "out" / f"{other}.jsonl")}
                   for other in SPLITS if other != name)
    summary = json.load(open(tmp_path / "out" / "summary.json"))
    reasons = [rule.reason(text, ended) for r in responses for text, ended in r]
    assert summary["samples_per_prompt"] == 4 and summary["prompts"] == len(PROMPTS)
    assert summary["pairs"] + summary["identical_dropped"] == 2 * len(PROMPTS)
    assert summary["degenerate_share"] == np.mean([bool(w) for w in reasons])
    assert summary["degenerate_reasons"] == {w: reasons.count(w) for w in set(reasons) if w}


def test_make_data_is_reproducible_by_seed(setup):
    root, _ = setup
    for fname in ("all.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl", "summary.json"):
        assert (root / "a" / fname).read_bytes() == (root / "b" / fname).read_bytes(), fname
    responses = {name: [(r["response_0"], r["response_1"]) for r in read_rows(root / name / "all.jsonl")]
                 for name in ("a", "c")}
    assert responses["c"] != responses["a"]
    assert responses["c"] == [p for p in oracle_pairs(root / "base", PROMPTS, seed=1) if p[0] != p[1]]


def test_make_data_limit_takes_the_first_prompts(setup, tmp_path):
    root, _ = setup
    res = make_data(root, tmp_path / "out", 0, "--limit", 3, "--splits", "0.4,0.3,0.3")
    assert res.returncode == 0, res.stderr
    summary = json.load(open(tmp_path / "out" / "summary.json"))
    assert summary["prompts"] == 3
    full = read_rows(root / "a" / "all.jsonl")
    assert read_rows(tmp_path / "out" / "all.jsonl") == [r for r in full if r["prompt"] in PROMPTS[:3]]


# ----------------------------------------------------------------------------------------- refusals

def test_make_data_refuses_bad_input(setup, tmp_path):
    root, _ = setup
    res = make_data(root, tmp_path / "none", 0, "--batch-size", 0)
    assert res.returncode == 2
    assert res.stderr.strip() == "uniarm make-data: error: batch size 0 must be at least 1 (rows sampled at once)"
    assert not (tmp_path / "none").exists()  # nothing half-written
    res = make_data(root, tmp_path / "odd", 0, "--samples", 3)
    assert res.returncode == 2
    assert res.stderr.strip() == ("uniarm make-data: error: 3 samples per prompt; expected an even number of at "
                                  "least 2 (pairs of them)")
    assert not (tmp_path / "odd").exists()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Name some fruit."}\n\n{"prompt": "Say six words."}\nnot json\n')
    res = uniarm("make-data", "--base", root / "base", "--out", tmp_path / "o", "--prompts", bad, "--template", "raw")
    assert res.returncode == 2 and res.stderr.strip() == f"uniarm make-data: error: {bad} line 4 is not valid JSON"

    res = make_data(root, tmp_path / "o", 0, "--splits", "0.5,0.5")
    assert res.returncode == 2 and "--splits '0.5,0.5' needs three fractions train,dev,test" in res.stderr
    res = make_data(root, tmp_path / "o", 0, "--splits", "5,3,4")  # counts of prompts: refused before sampling
    assert res.returncode == 2 and res.stderr.strip() == (
        f"uniarm make-data: error: split sizes [5, 3, 4] ask for 12 examples; {root / 'prompts.jsonl'} "
        "(prompts) has 11")
    assert not (tmp_path / "o").exists()

    long = write_prompts(tmp_path / "long.jsonl", ["Say six words.", " ".join(["apple"] * 125)])
    res = uniarm("make-data", "--base", root / "base", "--out", tmp_path / "o", "--prompts", long,
                 "--template", "raw", "--max-new-tokens", MAX_NEW, "--batch-size", BATCH)
    assert res.returncode == 2
    # BOS + 125 words
    assert "prompt 2 has 126 tokens; at most 122 fit (6 new tokens in the model's 128 positions)" in res.stderr
    assert not (tmp_path / "o").exists()
