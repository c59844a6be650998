"""The `uniarm` command, run as a user runs it."""

import subprocess
import sys

import torch
import transformers

from tests.tiny_models import make_tiny_llama


def uniarm(*args):
    return subprocess.run([sys.executable, "-m", "uniarm_jax.commands.main", *args], capture_output=True, text=True)


def test_info_prints_config_and_parameter_count(tmp_path):
    oracle = make_tiny_llama(tmp_path, num_key_value_heads=1, tie_word_embeddings=True)
    out = uniarm("info", "--base", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert lines["num_key_value_heads"] == "1" and lines["tie_word_embeddings"] == "True"
    assert int(lines["parameters"]) == sum(p.numel() for p in oracle.parameters())


def test_info_on_a_llama_7b_config_reads_no_weights(tmp_path):
    """Parameter count from shapes only: a 7B config with no weights beside it."""
    transformers.LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32).save_pretrained(tmp_path)
    out = uniarm("info", "--base", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "parameters: 6738415616" in out.stdout  # Llama-2-7B


def test_bad_directory_is_one_line_and_exit_2(tmp_path):
    out = uniarm("info", "--base", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"uniarm info: error: model directory {str(tmp_path / 'missing')!r} does not exist"


def test_convert_writes_a_bf16_directory(tmp_path):
    make_tiny_llama(tmp_path / "m")
    out = uniarm("convert", "--base", str(tmp_path / "m"), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16")
    assert out.returncode == 0, out.stderr
    reloaded = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "bf16"))
    assert reloaded.dtype == torch.bfloat16


def test_a_truncated_checkpoint_is_one_line_naming_the_file(tmp_path):
    make_tiny_llama(tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    out = uniarm("convert", "--base", str(tmp_path / "m"), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"uniarm convert: error: {path} is truncated: tensor ")


def test_an_internal_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only the project's own errors become one line: a bare ValueError (as numpy or jax raise) is a bug."""
    import pytest

    from uniarm_jax.commands import main as cli
    from uniarm_jax.commands import models

    def broken(args):
        raise ValueError("an internal bug")
    monkeypatch.setattr(models, "info", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        cli.main(["info", "--base", "x"])
    assert "error:" not in capsys.readouterr().err
