"""Commits the study's outputs as they are made (`scripts/study.py --commit`), so that a session cut off
mid-run loses only the minutes since the last commit: a later session starts from what is committed,
and an earlier one lost 110 training steps whose checkpoint had not been.

What is committed: everything under the given folders that .gitignore admits (adapters, training logs,
evaluation rows and reports), plus the latest checkpoint of each unfinished run (checkpoints are ignored
otherwise); older committed checkpoints, and those of runs that have finished, leave the tree (their
files stay on disk). Nothing else: the commit is built in a temporary index from HEAD, so whatever a
person working in the same checkout has staged stays staged and out of it; the real index is then
brought to the new HEAD for the study's folders only. HEAD moves only if it has not moved meanwhile
(`git update-ref` with the old value): a commit that races a person's is retried next time.

A checkpoint over MAX_CHECKPOINT_BYTES is never committed: every commit of one stays in the history for
good (the weak model's healing, LoRA rank 64 on every projection with its Adam state, is 83 MB a
checkpoint, committed every 20 minutes); such a run restarts if its session ends first (the healing
takes about an hour). An ARM's checkpoint is ~7 MB.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

MAX_CHECKPOINT_BYTES = 16 * 2**20


def _git(root: str, *args, index: str | None = None) -> str:
    env = dict(os.environ, GIT_INDEX_FILE=index) if index else None
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)


def latest_checkpoints(root: str, folder: str) -> list[str]:
    """The newest complete checkpoint (a step folder; orbax writes elsewhere and renames when done) of
    each run under `folder` that has no final adapter yet, relative to `root`, if it is no larger than
    MAX_CHECKPOINT_BYTES."""
    keep = []
    for parent, dirs, _ in os.walk(os.path.join(root, folder)):
        if os.path.basename(parent) != "checkpoints":
            continue
        dirs[:] = []  # nothing to find inside a run's checkpoints
        finished = os.path.isfile(os.path.join(os.path.dirname(parent), "adapter", "adapter_config.json"))
        steps = [int(d) for d in os.listdir(parent) if d.isdigit()]
        latest = os.path.join(parent, str(max(steps))) if steps else None
        if latest and not finished and _size(latest) <= MAX_CHECKPOINT_BYTES:
            keep.append(os.path.relpath(latest, root))
    return sorted(keep)


def commit_progress(root: str, folders: list[str], message: str, replace: str | None = None) -> str | None:
    """Commits `folders` (relative to the repository `root`) as described above; returns the new
    commit, or None when nothing changed or HEAD moved meanwhile.

    `replace`: a progress commit this process made earlier. If it is still HEAD, the new commit takes
    its place (on its parent), so a run's history keeps its last progress commit, not one every 20
    minutes, each with a checkpoint that would stay in the history for good. Commits leave this
    machine only when the session ends, so the one replaced was never shared."""
    folders = [f for f in folders if os.path.isdir(os.path.join(root, f))]
    head = _git(root, "rev-parse", "HEAD").strip()
    parent = _git(root, "rev-parse", f"{head}^").strip() if replace == head else head
    keep = [c for f in folders for c in latest_checkpoints(root, f)]
    tracked = _git(root, "ls-files", "-z", "--", *folders).split("\0") if folders else []
    drop = sorted({p.split("/checkpoints/")[0] + "/checkpoints/" + p.split("/checkpoints/")[1].split("/")[0]
                   for p in tracked if "/checkpoints/" in p} - set(keep))
    with tempfile.TemporaryDirectory() as tmp:
        index = os.path.join(tmp, "index")
        _git(root, "read-tree", "HEAD", index=index)
        if folders:
            _git(root, "add", "-A", "--", *folders, index=index)
        if keep:
            _git(root, "add", "-f", "--", *keep, index=index)
        if drop:
            _git(root, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *drop, index=index)
        tree = _git(root, "write-tree", index=index).strip()
    if tree == _git(root, "rev-parse", "HEAD^{tree}").strip():
        return None
    commit = _git(root, "commit-tree", tree, "-p", parent, "-m", message).strip()
    try:
        _git(root, "update-ref", "-m", "study: progress", "HEAD", commit, head)
    except subprocess.CalledProcessError:
        return None
    _git(root, "reset", "-q", "--", *folders)  # the real index follows HEAD for these folders only
    return commit
