"""`uniarm evaluate` end to end on a tiny word-level Llama with saved GenARM / UniARM adapters: the
rows it generates equal the library's guided decoding, its scores, r̄(α), HV and MIP equal a direct
numpy computation on those rows, and bad configs are refused before anything is generated."""

import json
import os

import numpy as np
import pytest

import uniarm_jax
from tests.cli_runner import run_uniarm as uniarm
from tests.synthetic import vocabulary
from tests.test_adapters import randomise
from tests.tiny_models import make_tiny_word_llama
from uniarm_jax.data.tokenization import TokenizeConfig, encode_prompt
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.eval.bootstrap import bootstrap_metric, front_metric, paired_difference
from uniarm_jax.eval.pareto import hypervolume, simplex_grid
from uniarm_jax.eval.scoring import brevity, informativeness
from uniarm_jax.hf.adapter_files import load_adapter, save_adapter
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter

PROMPTS = ["Name some fruit.", "What is in the basket?", "Say six words."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    make_tiny_word_llama(root / "base", vocabulary())
    base = uniarm_jax.load_pretrained(str(root / "base"))
    objectives = ["brevity", "informativeness"]
    save_adapter(randomise(init_adapter(base, AdapterConfig(kind="moslora")), seed=5), str(root / "uniarm"), objectives)
    for i in range(2):
        save_adapter(randomise(init_adapter(base, AdapterConfig(kind="lora", num_objectives=1)), seed=i),
                     str(root / f"genarm{i}"), objectives[i:i + 1])
    with open(root / "prompts.jsonl", "w") as f:
        for p in PROMPTS:
            f.write(json.dumps({"prompt": p}) + "\n")
    config = {"base": str(root / "base"), "prompts": str(root / "prompts.jsonl"), "template": "raw",
              "objectives": ["brevity", "informativeness"], "reference": [0.0, 0.0], "grid_steps": 4,
              "max_new_tokens": 6, "temperature": 0.0,
              "methods": {"uniarm": {"arms": [str(root / "uniarm")]},
                          "genarm": {"arms": [str(root / "genarm0"), str(root / "genarm1")]}}}
    return root, base, config


def write_config(path, config):
    with open(path, "w") as f:
        json.dump(config, f)  # JSON is YAML
    return path


def test_evaluate_end_to_end_matches_a_direct_computation(setup, tmp_path):
    root, base, config = setup
    out = tmp_path / "out"
    res = uniarm("evaluate", write_config(tmp_path / "eval.yaml", config), f"out_dir={out}",
                 "batch_size=4",  # 15 rows through 4 decode slots
                 "compare=[[uniarm,genarm],[genarm,base]]", "bootstrap=60")
    assert res.returncode == 0, res.stderr
    summary = json.load(open(out / "results.json"))
    prefs = simplex_grid(2, 4)
    assert summary["prefs"] == prefs.tolist() and summary["objectives"] == ["brevity", "informativeness"]
    assert set(summary["methods"]) == {"base", "uniarm", "genarm"}
    assert os.path.isfile(out / "pareto.png") and os.path.isfile(out / "results.md")
    tokenizer = uniarm_jax.load_tokenizer(str(root / "base"))
    arms = {"uniarm": [load_adapter(base, str(root / "uniarm"))],
            "genarm": [load_adapter(base, str(root / f"genarm{i}")) for i in range(2)]}
    per_prompt = {}
    for name in ("uniarm", "genarm"):
        rows = [json.loads(line) for line in open(out / "samples" / f"{name}.jsonl")]
        assert len(rows) == len(prefs) * len(PROMPTS)
        scores = np.zeros((len(rows), 2))
        for i, row in enumerate(rows):  # oracle: one prompt, one α at a time, scored directly
            ids, _, _ = encode_prompt(tokenizer, row["prompt"], TokenizeConfig(template="raw"))
            expected, _ = guided_generate(base, arms[name], [ids], 6, pref=row["pref"], pad_id=tokenizer.pad_token_id)
            assert row["text"] == tokenizer.decode(expected[0], skip_special_tokens=True).strip()
            assert row["pref"] == prefs[i // len(PROMPTS)].tolist()
            scores[i] = [brevity(row["prompt"], row["text"]), informativeness(row["prompt"], row["text"])]
            assert row["scores"] == {"brevity": scores[i, 0], "informativeness": scores[i, 1]}
        means = scores.reshape(len(prefs), len(PROMPTS), 2).mean(axis=1)
        metrics = summary["methods"][name]
        np.testing.assert_allclose(metrics["means"], means, rtol=1e-12)
        np.testing.assert_allclose(metrics["hv"], hypervolume(means, [0, 0]), rtol=1e-12)
        np.testing.assert_allclose(metrics["mip"], np.mean(np.sum(prefs * means, axis=1)), rtol=1e-12)
        per_prompt[name] = scores.reshape(len(prefs), len(PROMPTS), 2)
        for metric in ("hv", "mip"):  # the bootstrap of the scores just recomputed, called directly
            direct = bootstrap_metric(per_prompt[name], front_metric(metric, prefs, [0, 0]), 60)
            assert metrics[f"{metric}_ci"] == pytest.approx(direct, rel=1e-12)
        texts = {p: {r["text"] for r in rows if r["prompt"] == p} for p in PROMPTS}
        assert metrics["distinct_responses"] == np.mean([len(t) for t in texts.values()])
    base_rows = [json.loads(line) for line in open(out / "samples" / "base.jsonl")]
    assert len(base_rows) == len(PROMPTS) and all(r["pref"] is None for r in base_rows)
    per_prompt["base"] = np.array([[[brevity(r["prompt"], r["text"]), informativeness(r["prompt"], r["text"])]
                                    for r in base_rows]])
    for diff, (a, b) in zip(summary["differences"], [("uniarm", "genarm"), ("genarm", "base")]):
        assert (diff["a"], diff["b"]) == (a, b)
        for metric in ("hv", "mip"):
            direct = paired_difference(per_prompt[a], per_prompt[b], front_metric(metric, prefs, [0, 0]), 60)
            assert diff[metric] == pytest.approx(direct, rel=1e-12)
    assert "| uniarm − genarm |" in open(out / "results.md").read()
    assert "| uniarm |" in open(out / "results.md").read()


@pytest.mark.parametrize("override,message", [
    ("prefs=[[0.7,0.7]]", "preference vector [0.7, 0.7] sums to 1.4"),
    ("prefs=[[1.2,-0.2]]", "negative or non-finite entry"),
    ("reference=[0.0]", "must have 2 entries"),
    ("refrence=[0,0]", "did you mean 'reference'"),
    (("objectives=[brevity,informativeness,tone]", "reference=[0,0,0]"),
     "guides 2 objectives; the evaluation scores 3"),
    ("methods={base: {arms: [x]}}", "taken by the base model"),
    ("compare=[[uniarm,parm]]", "compare entry ['uniarm', 'parm']; expected two of the methods ['base', 'uniarm'"),
    ("bootstrap=-1", "bootstrap=-1; expected a number of replicates"),
    ("batch_size=0", "batch_size=0; expected at least 1 row decoded at once"),
    ("degeneracy={max_run: 1}", "degeneracy rule: max_run=1; expected an integer of at least 2"),
    ("objectives=[informativeness,brevity]", "learnt objectives ['brevity', 'informativeness']; in this evaluation "
                                             "it stands for ['informativeness', 'brevity']"),
])
def test_evaluate_refuses_bad_config_before_generating(setup, tmp_path, override, message):
    _, _, config = setup
    out = tmp_path / "out"
    res = uniarm("evaluate", write_config(tmp_path / "eval.yaml", config), f"out_dir={out}",
                             *([override] if isinstance(override, str) else override))
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert not out.exists()


def test_evaluate_refuses_a_reference_point_the_base_does_not_dominate(setup, tmp_path):
    _, _, config = setup
    res = uniarm("evaluate", write_config(tmp_path / "eval.yaml", config), f"out_dir={tmp_path / 'o'}",
                             "reference=[0.0,2.0]", "methods={}")
    assert res.returncode == 2 and "reference point [0.0, 2.0] is not dominated by the point" in res.stderr, res.stderr


def test_degenerate_responses_score_as_failures_and_are_reported(setup, tmp_path):
    from uniarm_jax.eval.scoring.degeneracy import DegeneracyRule

    root, base, config = setup
    rule = {"min_words": 4, "require_end": False}  # the tiny model's 6-token answers: some short, some not
    config = {**config, "methods": {"uniarm": config["methods"]["uniarm"]}, "degeneracy": rule}
    res = uniarm("evaluate", write_config(tmp_path / "eval.yaml", config), f"out_dir={tmp_path / 'out'}")
    assert res.returncode == 0, res.stderr
    summary = json.load(open(tmp_path / "out" / "results.json"))
    rows = [json.loads(line) for line in open(tmp_path / "out" / "samples" / "uniarm.jsonl")]
    reasons = DegeneracyRule(**rule).reasons([r["text"] for r in rows])
    assert [r["degenerate"] for r in rows] == reasons and any(reasons) and not all(reasons)
    for row, why in zip(rows, reasons):
        expected = ((0.0, 0.0) if why else (brevity(row["prompt"], row["text"]),
                                             informativeness(row["prompt"], row["text"])))
        assert (row["scores"]["brevity"], row["scores"]["informativeness"]) == pytest.approx(expected, abs=1e-12)
    share = np.array([bool(w) for w in reasons]).reshape(len(summary["prefs"]), len(PROMPTS)).mean(axis=1)
    np.testing.assert_allclose(summary["methods"]["uniarm"]["degenerate"], share)
    assert "Degenerate responses (run-on repetition, near-empty, never ended) score as failures" in \
        open(tmp_path / "out" / "results.md").read()


def test_an_interrupted_evaluation_generates_only_what_it_had_not_finished(setup, tmp_path):
    import shutil

    root, base, config = setup
    shutil.copytree(root / "uniarm", tmp_path / "arm")
    config = {**config, "methods": {"uniarm": {"arms": [str(tmp_path / "arm")]}}}
    path, out = write_config(tmp_path / "eval.yaml", config), tmp_path / "out"

    def run():
        res = uniarm("evaluate", path, f"out_dir={out}", "batch_size=4")  # 15 rows through 4 slots
        assert res.returncode == 0, res.stderr
        return [r["text"] for r in map(json.loads, open(out / "samples" / "uniarm.jsonl"))]

    def logged():
        lines = (out / "generations" / "uniarm.jsonl").read_text().splitlines()
        return lines[0], [json.loads(line) for line in lines[1:]]

    first = run()
    header, done = logged()
    assert sorted(r["row"] for r in done) == list(range(15))
    # the run "was killed" after six rows, in the middle of writing the seventh; one of the six is marked
    # with tokens the model never wrote, so reading it back is seen in the output
    tokenizer = uniarm_jax.load_tokenizer(str(root / "base"))
    marker, marked = [5, 5, 5], done[1]["row"]
    assert tokenizer.decode(marker, skip_special_tokens=True).strip() != first[marked]
    done[1]["tokens"] = marker
    cut = json.dumps(done[6])[:20]
    (out / "generations" / "uniarm.jsonl").write_text("\n".join([header, *map(json.dumps, done[:6]), cut]))
    again = run()
    assert again[marked] == tokenizer.decode(marker, skip_special_tokens=True).strip()  # read back, not generated
    assert [t for i, t in enumerate(again) if i != marked] == [t for i, t in enumerate(first) if i != marked]
    assert sorted(r["row"] for r in logged()[1]) == list(range(15))  # the other nine generated again, as before
    # the ARM retrained in place: another key, so every row is generated afresh (the marker is gone)
    save_adapter(randomise(init_adapter(base, AdapterConfig(kind="moslora")), seed=9), str(tmp_path / "arm"),
                 ["brevity", "informativeness"])
    retrained = run()
    assert logged()[0] != header and retrained[marked] != again[marked]
    shutil.copytree(root / "uniarm", tmp_path / "arm", dirs_exist_ok=True)  # the first ARM back: its answers
    assert run() == first
