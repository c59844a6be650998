"""Preference data: schemas, templates, tokenisation, batches, iterator state, and refused input.

Oracles: direct re-tokenisation with the real SmolLM2 tokenizer, and a byte-level tokenizer (one
token per UTF-8 byte) whose token counts are known exactly."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from uniarm_jax.commands.main import main
from uniarm_jax.data.batches import PreferenceBatches, collate
from uniarm_jax.data.pairs import load_preferences, split_data
from uniarm_jax.data.templates import apply_template
from uniarm_jax.data.tokenization import TokenizeConfig, encode, tokenize_pairs
from uniarm_jax.errors import ConfigError, DataError

PKU_ROWS = [
    {"prompt": "How do I bake bread?", "response_0": "Mix flour, water and yeast.", "response_1": "No idea.",
     "better_response_id": 0, "safer_response_id": 1, "reward_0": 1.5, "reward_1": -0.5, "cost_0": 2.0, "cost_1": -1.0},
    {"prompt": "Héllo wörld — 你好", "response_0": "Grüße 🌍", "response_1": "",
     "better_response_id": 1, "safer_response_id": 0, "reward_0": None, "reward_1": 0.25, "cost_0": 0.0, "cost_1": 3.0},
    {"prompt": "Tell me a joke about {braces}.", "response_0": "Why did the chicken cross the road?",
     "response_1": "I'd rather not.", "better_response_id": 0, "safer_response_id": 0, "reward_0": 0.1,
     "reward_1": 0.2, "cost_0": 0.5, "cost_1": 0.5},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def synthetic_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "ünïcode", "数据", "x"]
    text = lambda m: " ".join(rng.choice(words, size=m))  # noqa: E731
    return [{"prompt": text(rng.integers(1, 20)), "response_0": text(rng.integers(0, 30)),
             "response_1": text(rng.integers(0, 30)), "label_helpful": int(rng.integers(2)),
             "label_harmless": int(rng.integers(2)), "score_helpful_0": float(rng.normal()),
             "score_helpful_1": float(rng.normal())} for _ in range(n)]


@pytest.fixture(scope="session")
def smol(smollm2_dir):
    from uniarm_jax.hf.pretrained import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="session")
def byte_tok():
    """One token per UTF-8 byte; BOS <s> (1), EOS </s> (2), pad (0). Its post-processor adds BOS (as a
    Llama tokenizer does) and its chat template writes BOS: neither may double it."""
    from tokenizers import Tokenizer, decoders, models, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(sorted(ByteLevel.alphabet()))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}[assistant] {% endif %}")
    assert fast("ab")["input_ids"] == [1, vocab["a"], vocab["b"]]  # it does add BOS when asked
    return fast


def byte_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# --- templates ---------------------------------------------------------------------------------------

def test_templates_are_the_papers_strings(smol):
    assert apply_template("pku", "Hi {x}") == "BEGINNING OF CONVERSATION: USER: Hi {x} ASSISTANT:"
    assert apply_template("alpaca", "Hi") == ("Below is an instruction that describes a task. Write a response "
                                              "that appropriately completes the request.\n\n### Instruction:\n"
                                              "Hi\n\n### Response:\n")
    assert apply_template("tulu2", "Hi") == "<|user|>\nHi\n<|assistant|>\n"
    assert apply_template("raw", "\n\nHuman: Hi\n\nAssistant:") == "\n\nHuman: Hi\n\nAssistant:"
    assert apply_template("chat", "Hi", smol) == smol.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    with pytest.raises(ConfigError, match="template 'vicuna' is not one of"):
        apply_template("vicuna", "Hi")


# --- tokenisation --------------------------------------------------------------------------------------

def test_prompt_longer_than_the_limit_keeps_its_last_tokens(byte_tok, smol):
    cfg = TokenizeConfig(template="raw", max_prompt_tokens=8, max_total_tokens=20)
    ids, mask = encode(byte_tok, "abcdefghijklmnop", "xy", cfg)
    assert ids.tolist() == [1] + byte_ids(byte_tok, "jklmnop") + byte_ids(byte_tok, "xy") + [2]
    assert mask.tolist() == [0] * 8 + [1] * 3

    cfg = TokenizeConfig(template="pku", max_prompt_tokens=16, max_total_tokens=64)
    prompt = "Tell me everything about the long history of bread baking in many countries. " * 3
    ids, mask = encode(smol, prompt, "Sure.", cfg)
    full = smol(apply_template("pku", prompt), add_special_tokens=False)["input_ids"]
    assert ids[:16].tolist() == [smol.bos_token_id] + full[-15:]
    assert mask[:16].sum() == 0 and mask[16:].all()


def test_empty_response_is_just_eos(smol):
    cfg = TokenizeConfig(template="pku")
    ids, mask = encode(smol, "Hi", "", cfg)
    assert ids[-1] == smol.eos_token_id and mask.tolist() == [0] * (len(ids) - 1) + [1]


def test_non_ascii_text_round_trips(smol):
    prompt, response = "Héllo wörld — 你好 ∑", "Grüße 🌍 naïve café — ありがとう"
    ids, mask = encode(smol, prompt, response, TokenizeConfig(template="raw"))
    assert ids[0] == smol.bos_token_id and ids[-1] == smol.eos_token_id
    assert smol.decode(ids[1:][mask[1:] == 0]) == prompt
    assert smol.decode(ids[mask == 1][:-1]) == response


def test_response_cut_by_the_budget_is_a_prefix_without_eos(byte_tok, smol):
    """A cut response fills the budget with its own first tokens and gets no EOS (it did not end
    there); one that fits exactly keeps its EOS."""
    cfg = TokenizeConfig(template="raw", max_prompt_tokens=4, max_total_tokens=10)
    ids, mask = encode(byte_tok, "ab", "0123456789", cfg)
    assert ids.tolist() == [1] + byte_ids(byte_tok, "ab") + byte_ids(byte_tok, "0123456")
    assert len(ids) == 10 and mask.sum() == 7
    ids, _ = encode(byte_tok, "ab", "012345", cfg)
    assert ids.tolist() == [1] + byte_ids(byte_tok, "ab") + byte_ids(byte_tok, "012345") + [2]
    cfg = TokenizeConfig(template="pku", max_prompt_tokens=12, max_total_tokens=24)
    response = "a response far too long to fit in the budget of twenty-four tokens, " * 4
    ids, mask = encode(smol, "Hi there, how are you today?", response, cfg)
    full = smol(response, add_special_tokens=False)["input_ids"]
    assert len(ids) == 24 and smol.eos_token_id not in ids.tolist()
    assert ids[mask == 1].tolist() == full[:mask.sum()]


def test_a_response_that_never_ended_is_trained_without_eos(smol, tmp_path):
    """`ended_<i>` false: the response's tokens are the loss's targets and no EOS follows them, so no
    loss can lower (or raise) an end the sample never had; the other response keeps its EOS."""
    rows = [{"prompt": "p", "response_0": "cut mid", "response_1": "done.", "label_x": 1,
             "ended_0": False, "ended_1": True}]
    data = load_preferences(write_jsonl(tmp_path / "e.jsonl", rows), "multi")
    assert data.examples[0].ended == (False, True)
    pairs = tokenize_pairs(data, smol, TokenizeConfig(template="raw"))
    tokens = [smol(t, add_special_tokens=False)["input_ids"] for t in ("cut mid", "done.")]
    assert [r.tolist() for r in pairs.response_ids[0]] == [tokens[0], tokens[1] + [smol.eos_token_id]]
    assert not pairs.response_truncated[0].any()
    assert load_preferences(write_jsonl(tmp_path / "f.jsonl", [{k: v for k, v in rows[0].items()
                                                                 if not k.startswith("ended")}]),
                            "multi").examples[0].ended == (True, True)


def test_bos_appears_exactly_once(byte_tok, smol):
    cfg = TokenizeConfig(template="chat", max_prompt_tokens=64, max_total_tokens=96)
    ids, _ = encode(byte_tok, "hi", "yo", cfg)  # template writes <s>, post-processor would add another
    assert ids.tolist().count(1) == 1 and ids[0] == 1
    assert ids.tolist() == byte_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True,
                                                        add_generation_prompt=True, return_dict=False) \
        + byte_ids(byte_tok, "yo") + [2]
    ids, _ = encode(byte_tok, "hi", "yo", TokenizeConfig(template="raw"))
    assert ids.tolist().count(1) == 1 and ids[0] == 1
    ids, _ = encode(byte_tok, "hi", "yo", TokenizeConfig(template="raw", add_bos=False))
    assert 1 not in ids.tolist()
    # SmolLM2: BOS is <|im_start|>, which its chat template writes first: not doubled, and a truncated
    # chat prompt still starts with it.
    for limit in (512, 8):
        ids, _ = encode(smol, "Hi", "Hello!", TokenizeConfig(template="chat", max_prompt_tokens=limit))
        assert ids[0] == smol.bos_token_id and ids[1] != smol.bos_token_id


def test_packed_batch_matches_direct_retokenisation(smol, tmp_path):
    """Each pair is one row: BOS + prompt, response 0 + EOS, response 1 + EOS, padding; the targets are
    each response's tokens, each read from the position before it in its own sequence."""
    data = load_preferences(write_jsonl(tmp_path / "pku.jsonl", PKU_ROWS), "pku")
    cfg = TokenizeConfig(template="pku")
    pairs = tokenize_pairs(data, smol, cfg)
    batch = collate(pairs, [2, 0, 1], length=96, response_length=32)
    assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
        "input_ids": ((3, 96), "int32"), "segments": ((3, 96), "int32"), "target_ids": ((3, 2, 32), "int32"),
        "target_from": ((3, 2, 32), "int32"), "target_mask": ((3, 2, 32), "int32"), "labels": ((3, 2), "int32"),
        "scores": ((3, 2, 2), "float32")}
    for row, i in enumerate([2, 0, 1]):
        ex = PKU_ROWS[i]
        prompt = [smol.bos_token_id] + smol(apply_template("pku", ex["prompt"]), add_special_tokens=False)["input_ids"]
        responses = [smol(ex[f"response_{j}"], add_special_tokens=False)["input_ids"] + [smol.eos_token_id]
                     for j in (0, 1)]
        n = len(prompt) + len(responses[0]) + len(responses[1])
        assert batch["input_ids"][row, :n].tolist() == prompt + responses[0] + responses[1]
        assert (batch["input_ids"][row, n:] == smol.pad_token_id).all()
        assert batch["segments"][row].tolist() == ([0] * len(prompt) + [1] * len(responses[0])
                                                   + [2] * len(responses[1]) + [-1] * (96 - n))
        for j, response in enumerate(responses):
            m = len(response)
            start = len(prompt) + j * len(responses[0])
            assert batch["target_ids"][row, j, :m].tolist() == response
            assert batch["target_mask"][row, j].tolist() == [1] * m + [0] * (32 - m)
            assert batch["target_from"][row, j, :m].tolist() == [len(prompt) - 1] + list(range(start, start + m - 1))
            # what the model reads at those positions: the token before each target in its own sequence
            sequence = prompt + response
            assert batch["input_ids"][row, batch["target_from"][row, j, :m]].tolist() == sequence[len(prompt) - 1:-1]
        assert batch["labels"][row].tolist() == [ex["better_response_id"], ex["safer_response_id"]]


# --- schemas -------------------------------------------------------------------------------------------

def test_pku_schema_labels_and_scores(tmp_path):
    data = load_preferences(write_jsonl(tmp_path / "pku.jsonl", PKU_ROWS), "pku")
    assert data.objectives == ("helpful", "harmless") and data.rows_read == 3 and len(data) == 3
    assert data.labels().tolist() == [[0, 1], [1, 0], [0, 0]]
    np.testing.assert_array_equal(data.scores()[0], [[1.5, -2.0], [-0.5, 1.0]])  # harmless = -cost
    np.testing.assert_array_equal(data.scores()[1], [[np.nan, -0.0], [0.25, -3.0]])
    assert data.examples[1].prompt == "Héllo wörld — 你好" and data.examples[1].response_1 == ""
    only = load_preferences(str(tmp_path / "pku.jsonl"), "pku", objectives=["harmless"])
    assert only.objectives == ("harmless",) and only.labels().tolist() == [[1], [0], [0]]
    assert data.label_balance() == {"helpful": 2 / 3, "harmless": 2 / 3}
    bare = [{k: r[k] for k in ("prompt", "response_0", "response_1", "better_response_id", "safer_response_id")}
            for r in PKU_ROWS]
    assert np.isnan(load_preferences(write_jsonl(tmp_path / "bare.jsonl", bare), "pku").scores()).all()


def test_hh_schema_from_parquet(tmp_path):
    rows = [{"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello!", "rejected": " Go away."},
            {"prompt": "\n\nHuman: 2+2?\n\nAssistant:", "chosen": " 4", "rejected": " 5"}]
    pd.DataFrame(rows).to_parquet(tmp_path / "hh.parquet")
    data = load_preferences(str(tmp_path / "hh.parquet"), "hh")
    assert data.objectives == ("helpful",) and data.labels().tolist() == [[0], [0]]
    assert (data.examples[1].response_0, data.examples[1].response_1) == (" 4", " 5")
    assert data.scores().shape == (2, 2, 1) and np.isnan(data.scores()).all()


def test_multi_schema_any_k_from_json(tmp_path):
    rows = [{"prompt": "p", "response_0": "a", "response_1": "b", "label_helpful": 1, "label_harmless": 0,
             "label_humor": 1, "score_humor_0": -1.0, "score_humor_1": 2.5}]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    data = load_preferences(str(tmp_path / "m.json"), "multi")
    assert data.objectives == ("helpful", "harmless", "humor") and data.labels().tolist() == [[1, 0, 1]]
    np.testing.assert_array_equal(data.scores()[0], [[np.nan, np.nan, -1.0], [np.nan, np.nan, 2.5]])
    picked = load_preferences(str(tmp_path / "m.json"), "multi", objectives=["humor", "helpful"])
    assert picked.objectives == ("humor", "helpful") and picked.labels().tolist() == [[1, 1]]
    np.testing.assert_array_equal(picked.scores()[0, :, 0], [-1.0, 2.5])


# --- batches, order, splits, processes ---------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(smol, tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("data") / "multi.jsonl", synthetic_rows(22))
    data = load_preferences(path, "multi")
    return data, tokenize_pairs(data, smol, TokenizeConfig(template="pku", max_prompt_tokens=24, max_total_tokens=80))


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        assert a[k].tobytes() == b[k].tobytes(), k  # bitwise, NaN scores included


def test_iterator_resumes_exactly(synthetic):
    _, pairs = synthetic
    first = PreferenceBatches(pairs, 4, seed=3, bucket=16)
    for _ in range(7):  # 5 batches per epoch: crosses into epoch 2
        next(first)
    state = json.loads(json.dumps(first.state()))
    assert state == {"epoch": 1, "index": 2, "seed": 3, "shuffle": True, "batch_size": 4, "num_examples": 22,
                     "group_by_length": False}
    resumed = PreferenceBatches(pairs, 4, seed=3, bucket=16)
    resumed.restore(state)
    for _ in range(6):
        a, b = next(first), next(resumed)
        assert_batches_equal(a, b)
        # a packed row holds the prompt and both responses: up to 2 x 80 - 1 tokens, responses up to 79
        assert a["input_ids"].shape[-1] % 16 == 0 and a["input_ids"].shape[-1] <= 159
        assert a["target_ids"].shape[-1] % 4 == 0 and a["target_ids"].shape[-1] <= 79
    with pytest.raises(ConfigError, match="seed=3; this iterator has seed=4"):
        PreferenceBatches(pairs, 4, seed=4).restore(state)


def test_shuffle_and_splits_follow_the_seed(synthetic):
    data, pairs = synthetic
    assert (PreferenceBatches(pairs, 4, seed=1).order(0) == PreferenceBatches(pairs, 4, seed=1).order(0)).all()
    assert (PreferenceBatches(pairs, 4, seed=1).order(0) != PreferenceBatches(pairs, 4, seed=2).order(0)).any()
    assert (PreferenceBatches(pairs, 4, seed=1).order(0) != PreferenceBatches(pairs, 4, seed=1).order(1)).any()
    epoch = PreferenceBatches(pairs, 4, seed=1, num_epochs=1)
    assert len(list(epoch)) == 5  # 22 // 4; the remainder is dropped, shapes stay static

    def rows(splits):
        return {k: [e.row for e in v.examples] for k, v in splits.items()}

    splits = rows(split_data(data, (0.5, 0.25, 0.25), seed=0))
    assert [len(v) for v in splits.values()] == [11, 5, 6]  # boundaries at round(22 · [0.5, 0.75, 1])
    assert sorted(sum(splits.values(), [])) == list(range(1, 23))  # disjoint, covering
    assert rows(split_data(data, (0.5, 0.25, 0.25), seed=0)) == splits
    assert rows(split_data(data, (0.5, 0.25, 0.25), seed=1)) != splits
    assert [len(v) for v in split_data(data, (16, 2, 4)).values()] == [16, 2, 4]
    with pytest.raises(ConfigError, match="ask for 30 examples"):
        split_data(data, (20, 5, 5))


def test_length_grouped_batches_hold_pairs_of_like_length_and_resume(synthetic, monkeypatch):
    """Groups of 2 batches here (GROUP patched from 50): each batch is a run of one group's pairs
    sorted longest first, every example of the permutation's full batches appears once an epoch, the
    padding is less than ungrouped, and a resumed iterator continues the same batches."""
    from uniarm_jax.data import batches as batches_module
    from uniarm_jax.data.batches import packed_lengths

    monkeypatch.setattr(batches_module, "GROUP", 2)
    _, pairs = synthetic
    lengths = packed_lengths(pairs)[:, 0]
    grouped, plain = (PreferenceBatches(pairs, 4, seed=3, bucket=1, group_by_length=g) for g in (True, False))
    order, shuffled = grouped.order(0), plain.order(0)
    assert sorted(order) == list(range(22))
    for g in range(0, 20, 8):  # groups of 8 pairs of the seeded permutation (the last: 6 pairs)
        group = shuffled[g:g + 8]
        ranked = group[np.argsort(-lengths[group], kind="stable")]
        for b in range(0, len(group) - len(group) % 4, 4):
            assert any((order[i:i + 4] == ranked[b:b + 4]).all() for i in range(0, 20, 4)), (g, b)
    assert (order[20:] == shuffled[16:][np.argsort(-lengths[shuffled[16:]], kind="stable")][4:]).all()

    def padding(it):  # padded minus real tokens over one epoch
        return sum(int((b["segments"] < 0).sum()) for b in [next(it) for _ in range(5)])
    assert padding(PreferenceBatches(pairs, 4, seed=3, bucket=1, group_by_length=True)) < padding(plain)

    for _ in range(7):
        next(grouped)
    state = json.loads(json.dumps(grouped.state()))
    assert state["group_by_length"] is True
    resumed = PreferenceBatches(pairs, 4, seed=3, bucket=1, group_by_length=True)
    resumed.restore(state)
    for _ in range(4):
        assert_batches_equal(next(grouped), next(resumed))
    with pytest.raises(ConfigError, match="group_by_length=True; this iterator has group_by_length=False"):
        PreferenceBatches(pairs, 4, seed=3, bucket=1).restore(state)
    del state["group_by_length"]  # a state saved before grouping existed continues an ungrouped run
    PreferenceBatches(pairs, 4, seed=3, bucket=1).restore(state)


def test_process_slices_partition_the_global_batch(synthetic):
    _, pairs = synthetic
    whole = PreferenceBatches(pairs, 6, seed=5)
    parts = [PreferenceBatches(pairs, 6, seed=5, process_index=p, process_count=3) for p in range(3)]
    for _ in range(4):
        glob, local = next(whole), [next(p) for p in parts]
        assert all(x["input_ids"].shape[0] == 2 for x in local)
        assert_batches_equal(glob, {k: np.concatenate([x[k] for x in local]) for k in glob})
    with pytest.raises(ConfigError, match="batch_size=6 is not divisible by process_count=4"):
        PreferenceBatches(pairs, 6, process_count=4)


# --- refused input -----------------------------------------------------------------------------------

def bad_files(tmp_path):
    """(file, schema, objectives, max_chars, expected message) for each refused input."""
    missing = [dict(PKU_ROWS[0]), {k: v for k, v in PKU_ROWS[1].items() if k != "response_1"}]
    label = [dict(PKU_ROWS[0]), dict(PKU_ROWS[1], safer_response_id=2)]
    p = lambda name, rows: write_jsonl(tmp_path / name, rows)  # noqa: E731
    return {
        "missing": (p("missing.jsonl", missing), "pku", None, None,
                    f"{tmp_path / 'missing.jsonl'} row 2: missing field 'response_1'; the pku schema needs"),
        "no column": (p("nocol.jsonl", [{"prompt": "p", "chosen": "a"}]), "hh", None, None,
                      f"{tmp_path / 'nocol.jsonl'} row 1: missing field 'rejected'"),
        "label": (p("label.jsonl", label), "pku", None, None,
                  f"{tmp_path / 'label.jsonl'} row 2: field 'safer_response_id' is 2; expected 0 or 1"),
        "empty": (p("long.jsonl", PKU_ROWS), "pku", None, 10,
                  f"{tmp_path / 'long.jsonl'}: no rows left after filtering: all 3 rows were dropped "
                  "(3 with prompt + response longer than max_chars=10 characters)"),
        "objectives": (p("m.jsonl", synthetic_rows(2)), "multi", ["helpful", "humor"], None,
                       f"objective(s) ['humor'] are not in {tmp_path / 'm.jsonl'}; it has ['helpful', 'harmless']"),
        "ended": (p("ended.jsonl", [dict(r, ended_0=True, ended_1=1) for r in synthetic_rows(2)]), "multi", None,
                  None, f"{tmp_path / 'ended.jsonl'} row 1: field 'ended_1' is 1; expected true or false"),
        "unpaired ended": (p("half.jsonl", [dict(r, ended_0=True) for r in synthetic_rows(2)]), "multi", None,
                           None, "has field 'ended_0' but not 'ended_1'; they come in pairs"),
    }


@pytest.mark.parametrize("case", ["missing", "no column", "label", "empty", "objectives", "ended", "unpaired ended"])
def test_bad_input_is_refused_naming_what_and_where(tmp_path, case):
    path, schema, objectives, max_chars, message = bad_files(tmp_path)[case]
    with pytest.raises(DataError) as err:
        load_preferences(path, schema, objectives=objectives, max_chars=max_chars)
    assert message in str(err.value)


def test_partial_filter_counts_drops_and_unpaired_scores_are_refused(tmp_path):
    data = load_preferences(write_jsonl(tmp_path / "pku.jsonl", PKU_ROWS), "pku", max_chars=50)
    assert (data.rows_read, len(data), data.dropped) == (3, 2, {"max_chars": 1})
    assert [e.row for e in data.examples] == [1, 2]
    unpaired = [{k: v for k, v in r.items() if k != "cost_1"} for r in PKU_ROWS]
    with pytest.raises(DataError, match="has field 'cost_0' but not 'cost_1'"):
        load_preferences(write_jsonl(tmp_path / "u.jsonl", unpaired), "pku")


@pytest.mark.parametrize("case", ["missing", "label", "empty", "objectives"])
def test_uniarm_data_refuses_bad_input_in_one_line(tmp_path, capsys, smollm2_dir, case):
    path, schema, objectives, max_chars, message = bad_files(tmp_path)[case]
    argv = ["data", path, "--schema", schema, "--tokenizer", smollm2_dir]
    argv += ["--objectives", ",".join(objectives)] if objectives else []
    argv += ["--max-chars", str(max_chars)] if max_chars else []
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("uniarm data: error: ") and message in err


def test_uniarm_data_prints_what_training_sees(tmp_path, smol, smollm2_dir):
    rows = synthetic_rows(12, seed=7)
    path = write_jsonl(tmp_path / "multi.jsonl", rows)
    out = subprocess.run([sys.executable, "-m", "uniarm_jax.commands.main", "data", path, "--schema", "multi",
                          "--tokenizer",
                          smollm2_dir, "--template", "tulu2", "--max-chars", "150", "--max-prompt-tokens", "16",
                          "--max-total-tokens", "40"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    kept = [r for r in rows if len(r["prompt"]) + max(len(r["response_0"]), len(r["response_1"])) <= 150]
    assert 0 < len(kept) < 12 and lines["rows read"] == "12" and lines["rows kept"] == str(len(kept))
    assert lines["dropped max_chars"].startswith(f"{12 - len(kept)} ")
    assert lines["objectives"] == "helpful,harmless"
    assert float(lines["prefer response_0 harmless"]) == pytest.approx(
        np.mean([r["label_harmless"] == 0 for r in kept]), abs=5e-4)
    cfg = TokenizeConfig(template="tulu2", max_prompt_tokens=16, max_total_tokens=40)
    lengths = [len(encode(smol, r["prompt"], r[f"response_{j}"], cfg)[0]) for r in kept for j in (0, 1)]
    assert int(lines["total tokens max"]) == max(lengths) <= 40
    assert lines["prompts truncated"].startswith(f"{len(kept)} of {len(kept)} ")  # tulu2 alone is 16+ tokens
    assert int(lines["total tokens p50"]) == int(np.percentile(lengths, 50, method="higher"))
