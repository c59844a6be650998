"""The README's main command, `uniarm demo`, on the real SmolLM2 and the committed UniARM adapter (small
sizes): it prints responses with their scores at three α and writes the Pareto front, and what it
prints is what guided decoding of that row gives, scored by the objectives' scorers (or, degenerate,
their failure values)."""

import json

import numpy as np

from tests.cli_runner import run_uniarm
from uniarm_jax.commands.demo import DEMO_ARM, DEMO_PROMPTS
from uniarm_jax.data.tokenization import TokenizeConfig, encode_prompt
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.eval.scoring import make_scorers, scorer_specs
from uniarm_jax.eval.scoring.degeneracy import DegeneracyRule
from uniarm_jax.hf.adapter_files import load_adapter, read_adapter
from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer


def test_demo_prints_scored_responses_and_writes_the_front(smollm2_dir, tmp_path):
    res = run_uniarm("demo", "--num-prompts", 2, "--show", 1, "--max-new-tokens", 8, "--arm-weight", 0.5,
                     "--out", tmp_path)
    printed = res.stdout
    assert res.returncode == 0, res.stderr
    names = read_adapter(DEMO_ARM).objectives
    scorers = make_scorers(scorer_specs(names))
    summary = json.load(open(tmp_path / "results.json"))
    assert summary["objectives"] == names and len(summary["prefs"]) == 11
    assert summary["reference"] == [s.failure for s in scorers]
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["methods"]) == {"base", "uniarm"}
    for alpha in ("1, 0", "0.5, 0.5", "0, 1"):
        assert f"[α = {alpha}] {names[0]} " in printed
    assert "different responses per prompt across the 11 α: [" in printed

    rows = [json.loads(line) for line in open(tmp_path / "samples" / "uniarm.jsonl")]
    prompt = json.loads(open(DEMO_PROMPTS).readline())["prompt"]
    row = next(r for r in rows if r["prompt"] == prompt and r["pref"] == [0.0, 1.0])
    base = load_pretrained(smollm2_dir)
    tokenizer = load_tokenizer(smollm2_dir)
    ids, _, _ = encode_prompt(tokenizer, prompt, TokenizeConfig(template="chat", max_prompt_tokens=512,
                                                                 max_total_tokens=520))
    expected, _ = guided_generate(base, [load_adapter(base, DEMO_ARM)], [ids], 8, pref=[0.0, 1.0], arm_weights=[0.5],
                                  pad_id=tokenizer.pad_token_id)
    text = tokenizer.decode(expected[0], skip_special_tokens=True).strip()
    assert row["text"] == text and f"    {text}\n" in printed
    reason = DegeneracyRule().reason(text, expected[0][-1] in base.config.eos_token_ids)
    assert row["degenerate"] == reason
    direct = [s.failure if reason else s([prompt], [text])[0] for s in scorers]
    np.testing.assert_allclose([row["scores"][n] for n in names], direct, rtol=1e-12)


def test_the_demo_adapter_carries_no_machine_path_and_finds_smollm2_by_fingerprint(smollm2_dir):
    """The committed adapter records SmolLM2 by fingerprint (format 2), no path of the machine that
    trained it (at most the project's cache under `~`): `make demo`'s freshly prepared SmolLM2,
    wherever the cache is, is its base."""
    meta = json.load(open(f"{DEMO_ARM}/adapter_config.json"))
    assert meta["format"] == "uniarm_jax.adapter/2"
    assert meta["base_path_hint"] in (None, "~/.cache/uniarm_jax/SmolLM2-135M-Instruct")
    assert meta["base_name"] == "SmolLM2-135M-Instruct" and '"/' not in json.dumps(meta)  # no absolute path
    arm = load_adapter(load_pretrained(smollm2_dir), DEMO_ARM)
    assert arm.adapter_config.kind == "moslora" and arm.path == smollm2_dir
