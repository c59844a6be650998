"""scripts/commit_progress.py against a real git repository: the study's outputs and its unfinished
runs' latest checkpoints are committed, nothing a person has staged is, older checkpoints leave the
tree (not the disk), and a finished run keeps no checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from commit_progress import commit_progress  # noqa: E402

FOLDERS = ["runs/study", "docs/results/study"]


def git(root, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def write(root, path, text="x"):
    path = os.path.join(root, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def repo(tmp_path):
    root = str(tmp_path)
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@t")
    git(root, "config", "user.name", "t")
    write(root, ".gitignore", "/runs/study/**/checkpoints/\n")
    write(root, "code.py", "a = 1\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    return root


def files(root, rev="HEAD") -> set:
    return set(git(root, "ls-tree", "-r", "--name-only", rev).split())


def test_commits_outputs_and_the_latest_checkpoint_but_nothing_a_person_staged(repo):
    run = "runs/study/same/arm"
    write(repo, f"{run}/metrics.jsonl", "{}\n")
    write(repo, f"{run}/checkpoints/20/state")
    write(repo, f"{run}/checkpoints/40.orbax-checkpoint-tmp-1/state")  # being written: never committed
    write(repo, "docs/results/study/k2/generations/a.jsonl", "row\n")
    write(repo, "code.py", "a = 2\n")
    git(repo, "add", "code.py")  # a person's staged work
    write(repo, "notes.txt", "untracked")

    assert commit_progress(repo, FOLDERS, "progress 1")
    assert files(repo) == {".gitignore", "code.py", f"{run}/metrics.jsonl", f"{run}/checkpoints/20/state",
                           "docs/results/study/k2/generations/a.jsonl"}
    assert git(repo, "show", "HEAD:code.py") == "a = 1\n"  # the staged change is not in the commit...
    assert git(repo, "diff", "--cached", "--name-only").split() == ["code.py"]  # ...and is still staged
    assert git(repo, "status", "--porcelain", "--", "runs", "docs").strip() == ""  # the index follows HEAD
    assert commit_progress(repo, FOLDERS, "nothing new") is None

    write(repo, f"{run}/checkpoints/60/state")  # a newer checkpoint replaces the committed one
    write(repo, "docs/results/study/k2/generations/a.jsonl", "row\nrow\n")
    assert commit_progress(repo, FOLDERS, "progress 2")
    assert {p for p in files(repo) if "/checkpoints/" in p} == {f"{run}/checkpoints/60/state"}
    assert os.path.isfile(os.path.join(repo, run, "checkpoints", "20", "state"))  # still on disk
    assert git(repo, "log", "--format=%s").split("\n")[:2] == ["progress 2", "progress 1"]

    write(repo, f"{run}/adapter/adapter_config.json", "{}")  # the run finished: no checkpoint kept
    assert commit_progress(repo, FOLDERS, "finished")
    assert not any("/checkpoints/" in p for p in files(repo)) and f"{run}/adapter/adapter_config.json" in files(repo)
    assert git(repo, "diff", "--cached", "--name-only").split() == ["code.py"]


def test_a_head_that_moved_meanwhile_is_not_overwritten(repo, monkeypatch):
    import commit_progress as module

    write(repo, "runs/study/same/arm/metrics.jsonl", "{}\n")
    real = module._git

    def racing(root, *args, index=None):
        if args[0] == "update-ref":  # a person commits between the tree and the ref update
            write(root, "other.txt")
            real(root, "add", "other.txt")
            real(root, "commit", "-qm", "a person's commit")
        return real(root, *args, index=index)

    monkeypatch.setattr(module, "_git", racing)
    assert commit_progress(repo, FOLDERS, "progress") is None
    assert git(repo, "log", "-1", "--format=%s").strip() == "a person's commit"
    monkeypatch.setattr(module, "_git", real)
    assert commit_progress(repo, FOLDERS, "progress")  # the next attempt goes through
    assert {"other.txt", "runs/study/same/arm/metrics.jsonl"} <= files(repo)


def test_a_checkpoint_too_large_for_the_history_is_never_committed(repo, monkeypatch):
    import commit_progress as module

    monkeypatch.setattr(module, "MAX_CHECKPOINT_BYTES", 1000)
    small, large = "runs/study/same/arm", "runs/study/heal"
    write(repo, f"{small}/checkpoints/20/state", "x" * 1000)
    write(repo, f"{large}/metrics.jsonl", "{}\n")
    write(repo, f"{large}/checkpoints/20/state", "x" * 600)
    write(repo, f"{large}/checkpoints/20/more/state", "x" * 600)  # 1200 bytes in all
    assert commit_progress(repo, FOLDERS, "progress")
    assert {p for p in files(repo) if "/checkpoints/" in p} == {f"{small}/checkpoints/20/state"}
    assert f"{large}/metrics.jsonl" in files(repo)  # the rest of that run is committed


def test_a_progress_commit_still_at_head_is_replaced_with_its_checkpoint(repo):
    run = "runs/study/same/arm"
    base = git(repo, "rev-parse", "HEAD").strip()
    write(repo, f"{run}/checkpoints/20/state", "step 20")
    first = commit_progress(repo, FOLDERS, "progress 1")
    write(repo, f"{run}/checkpoints/40/state", "step 40")
    second = commit_progress(repo, FOLDERS, "progress 2", replace=first)
    assert git(repo, "rev-parse", f"{second}^").strip() == base  # in place of the first, on its parent
    history = git(repo, "rev-list", "--objects", "HEAD")
    assert git(repo, "rev-parse", f"{first}:{run}/checkpoints/20/state").strip() not in history

    write(repo, "other.txt")  # a person commits: HEAD is no longer the progress commit, nothing is replaced
    git(repo, "add", "other.txt")
    git(repo, "commit", "-qm", "a person's commit")
    person = git(repo, "rev-parse", "HEAD").strip()
    write(repo, f"{run}/adapter/adapter_config.json", "{}")
    finished = commit_progress(repo, FOLDERS, "finished", replace=second)
    assert git(repo, "rev-parse", f"{finished}^").strip() == person
