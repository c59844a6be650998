"""`uniarm train` end to end on a tiny word-level Llama and a learnable synthetic preference task:
learning, SIGKILL and resume (against an uninterrupted run), a kill during a save, NaN stops,
config errors, and 2 processes x 4 devices (against 1 process x 8)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.synthetic import vocabulary, write_pairs
from tests.tiny_models import make_tiny_word_llama
from uniarm_jax.hf.safetensors import SafetensorsFile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_tiny_word_llama(root / "base", vocabulary())
    return {"base": str(root / "base"), "train": write_pairs(root / "train.jsonl", 192, seed=0),
            "dev": write_pairs(root / "dev.jsonl", 64, seed=1)}


def overrides(task, out_dir, **extra):
    values = {"model.base": task["base"], "data.train": task["train"], "data.dev": task["dev"],
              "data.schema": "multi", "data.template": "raw", "data.bucket": 16,
              "objective.betas": "[0.5,0.5]", "optim.batch_size": 8, "optim.learning_rate": 0.02,
              "optim.warmup_steps": 2, "optim.max_steps": 12, "run.out_dir": str(out_dir), "run.save_every": 2,
              "run.eval_every": 100, "run.log_every": 1, "run.progress": "false", "run.tensorboard": "false"}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def uniarm_train(args, env=None, wait=True):
    config = os.path.join(REPO, "configs", "small_cpu_uniarm.yaml")
    cmd = [sys.executable, "-m", "uniarm_jax.commands.main", "train", config, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def read_metrics(out_dir, split):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def adapter_arrays(out_dir):
    f = SafetensorsFile(os.path.join(out_dir, "adapter", "adapter.safetensors"))
    return {name: f.read(name) for name in f.keys()}


# Why these numbers hold on any CPU: a different CPU rounds differently, and training amplifies that
# like a change of seed, so the setting was chosen on the spread over seeds, not on one machine's run.
# The former setting (lr 0.05, 40 steps) was chaotic (clipped grad norms up to ~380, loss spikes to 6):
# over 8 perturbations (run.seed 0-3, data seeds, base-model seeds) the final dev accuracy went as
# low as 0.766 (fruit, run.seed 0, i.e. this very test on some machines) with loss ratio 0.55.
# At lr 0.02 for 72 steps (3 epochs) the step is stable (grad norms <= ~11), and over 14 perturbations
# (run.seed 0-5, four train/dev data seeds, four base-model seeds, two combinations) the worst final
# dev accuracy was 0.969 per objective (most runs 1.0), so the 0.85 threshold leaves >= 0.1 margin;
# the worst rise over the untrained base was 0.30 (against 0.2 asserted) and the worst last/first loss
# ratio 0.37 (against 0.7). The test still fails without learning (lr 0: loss ratio 1.33, accuracy
# stays the base's 0.69 / 0.25) and with a loss of the wrong sign (lr -0.02: ratio 7.4, 0.67 / 0.03).
def test_loss_falls_and_dev_accuracy_rises(task, tmp_path):
    steps = 72
    code, out, err = uniarm_train(overrides(task, tmp_path, **{
        "optim.max_steps": steps, "optim.learning_rate": 0.02, "run.eval_every": steps, "run.save_every": steps,
        "adapter.targets": "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"}))
    assert code == 0, err
    train, dev = read_metrics(tmp_path, "train"), read_metrics(tmp_path, "dev")
    first, last = np.mean([r["loss"] for r in train[:5]]), np.mean([r["loss"] for r in train[-5:]])
    assert last < 0.7 * first, (first, last)
    assert dev[0]["step"] == 0 and dev[-1]["step"] == steps
    for objective in ("fruit", "berry"):
        before, after = dev[0][f"accuracy/{objective}"], dev[-1][f"accuracy/{objective}"]
        assert after >= 0.85 and after > before + 0.2, (objective, before, after)
    assert "dev accuracy/fruit" in out


def test_sigkill_and_resume_end_with_the_uninterrupted_weights(task, tmp_path):
    code, _, err = uniarm_train(overrides(task, tmp_path / "straight"))
    assert code == 0, err

    proc = uniarm_train(overrides(task, tmp_path / "killed"), wait=False)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 7:  # dev at 0 + 6 train steps
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoints = tmp_path / "killed" / "checkpoints"
    saved = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert saved and max(saved) < 12

    # What a kill in the middle of a save leaves behind: an uncommitted temporary step directory.
    partial = checkpoints / f"{max(saved) + 1}.orbax-checkpoint-tmp-1"
    partial.mkdir()
    (partial / "state").mkdir()
    (partial / "state" / "half-written").write_bytes(b"\0" * 10)

    code, out, err = uniarm_train(overrides(task, tmp_path / "killed"))
    assert code == 0, err
    straight, resumed = adapter_arrays(tmp_path / "straight"), adapter_arrays(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    for name in straight:  # fp32 on CPU, the same compiled step, the same batches and rngs: bitwise
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    # every step logged once, as the uninterrupted run logs it (the rows after the checkpoint are redone)
    for split in ("train", "dev"):
        killed, straight = ([{k: v for k, v in r.items() if k != "tokens_per_s"}
                             for r in read_metrics(tmp_path / d, split)] for d in ("killed", "straight"))
        assert killed == straight, split


def test_a_changed_preference_rate_resumes_a_lora_and_refuses_a_moslora_naming_the_key(task, tmp_path):
    """A plain LoRA (GenARM) has no preference parameters, so `optim.preference_lr_ratio` does not enter
    its state and its checkpoint resumes under another ratio; a MoSLoRA's optimizer state changes with
    the ratio, and resuming it under another is refused with the key that changed, not orbax's tree dump."""
    lora = {"adapter.kind": "lora", "objective.method": "genarm", "objective.objective": 0}
    for extra, out in ((lora, tmp_path / "lora"), ({}, tmp_path / "moslora")):
        code, _, err = uniarm_train(overrides(task, out, **extra, **{"optim.max_steps": 2}))
        assert code == 0, err
        code, out_text, err = uniarm_train(overrides(task, out, **extra, **{"optim.max_steps": 4,
                                                                          "optim.preference_lr_ratio": 16}))
        if extra:
            assert code == 0 and f"resumed from {out / 'checkpoints'} step 2" in out_text + err, err
        else:
            assert code == 2, err
            message = err.strip().splitlines()[-1]
            assert "step 2 holds a train state of another layout" in message, message
            assert "optim.preference_lr_ratio 1.0 -> 16.0" in message and "optim.max_steps 2 -> 4" in message, message


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(task, tmp_path):
    code, _, err = uniarm_train(overrides(task, tmp_path, **{"optim.learning_rate": 1e30, "optim.grad_clip": "null",
                                                           "run.save_every": 1, "adapter.dropout": 0.0}))
    assert code == 3, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("uniarm train: stopped: loss is nan at step ") or "loss is inf at step" in message
    bad_step = int(message.split(" at step ")[1].split(";")[0])
    good = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert good and max(good) == bad_step - 1
    assert f"the last good checkpoint is step {bad_step - 1}" in message


# Why these numbers hold: over teachers of seeds 1, 2 and 3 (random tiny models on the task's
# vocabulary) the dev KL after 24 steps was 0.19-0.24 of its start, so 0.5 leaves a margin of 2x. The
# base as its own teacher is the oracle of the untrained step: the ARM adds exactly zero, KL is 0.
def test_distillation_from_a_teacher_moves_the_student_toward_it(task, tmp_path):
    teacher = tmp_path / "teacher"
    make_tiny_word_llama(teacher, vocabulary(), seed=1)
    distil = {"objective.method": "distil", "adapter.kind": "lora", "optim.max_steps": 24, "run.eval_every": 24,
              "run.save_every": 24, "adapter.targets": "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"}
    code, _, err = uniarm_train(overrides(task, tmp_path / "run", **distil, **{"objective.teacher": teacher}))
    assert code == 0, err
    dev = read_metrics(tmp_path / "run", "dev")
    assert [d["step"] for d in dev] == [0, 24] and dev[-1]["kl_per_token"] < 0.5 * dev[0]["kl_per_token"], dev
    code, _, err = uniarm_train(overrides(task, tmp_path / "self", **{
        **distil, "objective.teacher": task["base"], "optim.max_steps": 1}))
    assert code == 0, err
    assert read_metrics(tmp_path / "self", "dev")[0]["kl_per_token"] == pytest.approx(0.0, abs=1e-6)
    other = tmp_path / "other"
    make_tiny_word_llama(other, vocabulary()[:-1])
    code, _, err = uniarm_train(overrides(task, tmp_path / "bad", **distil, **{"objective.teacher": other}))
    assert code == 2 and "has another tokenizer than the base" in err, err


def test_unknown_config_key_lists_valid_keys_and_closest_match(task, tmp_path):
    code, _, err = uniarm_train(overrides(task, tmp_path) + ["optim.learning_rat=0.1"])
    assert code == 2
    assert "unknown key optim.learning_rat (did you mean 'learning_rate'?); valid keys of 'optim' are" in err
    code, _, err = uniarm_train(overrides(task, tmp_path, **{"mesh.data": 3}))
    assert code == 2 and "mesh data=3 x fsdp=1 x tensor=1 = 3 devices does not match the 8 devices" in err
    code, _, err = uniarm_train(overrides(task, tmp_path, **{"optim.batch_size": 12}))
    assert code == 2 and "a micro-batch of 12 pairs" in err and "8 data-parallel devices" in err


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_of_four_devices_match_one_process_of_eight(task, tmp_path):
    args = {"optim.max_steps": 4, "run.save_every": 4, "mesh.data": 4, "mesh.fsdp": 2, "adapter.dropout": 0.0}
    code, _, err = uniarm_train(overrides(task, tmp_path / "one", **args))
    assert code == 0, err

    port = _free_port()
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [uniarm_train(overrides(task, tmp_path / "two", **args, **{
        "distributed.coordinator_address": f"localhost:{port}", "distributed.num_processes": 2,
        "distributed.process_id": i}), env=env, wait=False) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    one = [r["loss"] for r in read_metrics(tmp_path / "one", "train")]
    two = [r["loss"] for r in read_metrics(tmp_path / "two", "train")]
    assert len(one) == len(two) == 4
    np.testing.assert_allclose(two, one, rtol=1e-5)
