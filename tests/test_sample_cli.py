"""`uniarm sample` end to end on a tiny word-level Llama and a saved UniARM adapter, and its refusals."""

import json
import shutil

import pytest

import uniarm_jax
from tests.cli_runner import run_uniarm
from tests.synthetic import vocabulary
from tests.test_adapters import randomise
from tests.tiny_models import make_tiny_word_llama
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.hf.adapter_files import save_adapter
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_tiny_word_llama(root / "base", vocabulary())
    base = uniarm_jax.load_pretrained(str(root / "base"))
    arm = randomise(init_adapter(base, AdapterConfig(kind="moslora")), seed=5)
    save_adapter(arm, str(root / "arm"))
    with open(root / "prompts.jsonl", "w") as f:
        for p in ["Name some fruit.", "What is in the basket?", "Say six words."]:
            f.write(json.dumps({"prompt": p}) + "\n")
    return root, base, arm


def uniarm_sample(*args):
    return run_uniarm("sample", "--no-progress", *args)


def test_sample_writes_every_prompt_under_every_preference(setup, tmp_path):
    root, base, arm = setup
    out = tmp_path / "out.jsonl"
    res = uniarm_sample("--base", root / "base", "--arm", root / "arm", "--pref", "1,0", "--pref", "0.3,0.7",
                        "--prompts", root / "prompts.jsonl", "--out", out, "--max-new-tokens", 5,
                        "--template", "raw", "--batch-size", 2)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 6 and [r["pref"] for r in rows] == [[1.0, 0.0]] * 3 + [[0.3, 0.7]] * 3
    assert set(rows[0]) == {"prompt", "pref", "prompt_token_ids", "token_ids", "text"}
    assert "tokens/s" in res.stdout
    tokenizer = uniarm_jax.load_tokenizer(str(root / "base"))
    for row in rows:  # the same as the library call, row by row
        expected, _ = guided_generate(base, [arm], [row["prompt_token_ids"]], 5, pref=row["pref"],
                                      pad_id=tokenizer.pad_token_id)
        assert row["token_ids"] == expected[0]
        assert row["prompt_token_ids"][0] == tokenizer.bos_token_id
        assert row["text"] == tokenizer.decode(row["token_ids"], skip_special_tokens=True)


def test_sample_refuses_bad_input_before_compiling(setup, tmp_path):
    root, base, arm = setup
    common = ["--prompts", root / "prompts.jsonl", "--out", tmp_path / "o.jsonl", "--template", "raw",
              "--max-new-tokens", 4]
    res = uniarm_sample("--base", root / "base", "--arm", root / "arm", "--pref", "0.7,0.7", *common)
    assert res.returncode == 2 and "preference vector [0.7, 0.7] sums to 1.4" in res.stderr
    res = uniarm_sample("--base", root / "base", "--arm", root / "arm", *common)
    assert res.returncode == 2 and "needs --pref with 2 weights" in res.stderr
    res = uniarm_sample("--base", root / "base", "--arm", root / "missing", "--pref", "1,0", *common)
    assert res.returncode == 2 and "does not exist" in res.stderr

    res = uniarm_sample("--base", root / "base", "--arm", root / "arm", "--pref", "1,0", "--max-prompt-tokens", 3,
                        *common)
    assert res.returncode == 2 and "prompt 1 of" in res.stderr and "--truncate-prompts" in res.stderr
    res = uniarm_sample("--base", root / "base", "--arm", root / "arm", "--pref", "1,0", "--max-prompt-tokens", 3,
                        "--truncate-prompts", *common)
    assert res.returncode == 0, res.stderr
    assert "prompts longer than 3 tokens kept only their last tokens" in res.stdout
    assert all(len(json.loads(line)["prompt_token_ids"]) == 3 for line in open(tmp_path / "o.jsonl"))

    other = sorted(vocabulary())[::-1]  # the same words, other ids
    make_tiny_word_llama(tmp_path / "other", ["zebra"] + other[1:])
    res = uniarm_sample("--base", root / "base", "--arm", tmp_path / "other", *common)
    assert res.returncode == 2 and "disagrees with the base's" in res.stderr

    # an adapter whose base is neither the decoding base nor at its recorded path (which now holds
    # another model: 3 layers, the adapter's has 2), nor the --arm-base given
    make_tiny_word_llama(tmp_path / "deeper", vocabulary(), num_hidden_layers=3)
    make_tiny_word_llama(tmp_path / "reseeded", vocabulary(), seed=1)
    shutil.copytree(root / "arm", tmp_path / "arm")
    meta = json.load(open(tmp_path / "arm" / "adapter_config.json"))
    json.dump(dict(meta, base_path_hint=str(tmp_path / "deeper")), open(tmp_path / "arm" / "adapter_config.json", "w"))
    res = uniarm_sample("--base", tmp_path / "deeper", "--arm", tmp_path / "arm", "--pref", "1,0",
                        "--arm-base", tmp_path / "reseeded", *common)
    assert res.returncode == 2, res.stderr
    assert f"ARM '{tmp_path / 'arm'}' was trained on 'base', which is not here: '{tmp_path / 'deeper'}' has " \
           f"num_hidden_layers=3, not 2; '{tmp_path / 'reseeded'}' has the same shapes but other weights" in res.stderr
    assert "pass --arm-base DIR with that model" in res.stderr


def test_a_second_run_loads_its_programs_from_the_persistent_cache(setup, tmp_path):
    """Two fresh `uniarm sample` processes on the same shapes and a fresh cache directory: the first
    compiles (and writes the cache), the second spends under a second on compilation. One batch, so
    the summary line's rates are both numbers (no 'nan' from an empty steady state)."""
    import os
    import re
    import subprocess
    import sys

    root, _, _ = setup
    env = {**os.environ, "UNIARM_COMPILE_CACHE": str(tmp_path / "compiled")}
    cmd = [sys.executable, "-m", "uniarm_jax.commands.main", "sample", "--no-progress", "--base", str(root / "base"),
           "--arm", str(root / "arm"), "--pref", "0.5,0.5", "--prompts", str(root / "prompts.jsonl"),
           "--out", str(tmp_path / "o.jsonl"), "--max-new-tokens", "6", "--template", "raw"]
    seconds = []
    for _ in range(2):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
        line = res.stdout.strip().splitlines()[-1]
        m = re.search(r"([\d.]+) tokens/s with compilation \(([\d.]+) s of it\), ([\d.]+) tokens/s without", line)
        assert m and "nan" not in line, line
        seconds.append(float(m.group(2)))
    assert os.listdir(tmp_path / "compiled")
    assert seconds[1] < 1.0 and seconds[1] < seconds[0], seconds


def test_an_arm_with_the_base_tokenizer_file_is_not_loaded_twice(setup, tmp_path, monkeypatch):
    """A plain-HF ARM whose tokenizer.json is the base's byte for byte shares its tokenizer: the
    check needs no second tokenizer load (seconds of a `uniarm sample` process)."""
    import uniarm_jax.decode.guides as guides

    root, base, _ = setup
    uniarm_jax.save_pretrained(base, str(tmp_path / "full_arm"))  # copies the tokenizer files
    monkeypatch.setattr(guides, "load_tokenizer", lambda path: pytest.fail(f"loaded the tokenizer of {path}"))
    res = uniarm_sample("--base", root / "base", "--arm", tmp_path / "full_arm", "--arm-weight", 0.5,
                        "--prompts", root / "prompts.jsonl", "--out", tmp_path / "o.jsonl", "--max-new-tokens", 3,
                        "--template", "raw")
    assert res.returncode == 0, res.stderr
