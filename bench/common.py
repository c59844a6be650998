"""Helpers shared by the benchmarks in bench/ (each runs as a script, so bench/ is its sys.path[0]).

- `clock`: wall and process CPU seconds of one call;
- `summary`: medians, ranges and ratios of paired (ours, reference) timings;
- `memory_mib`: this process's peak RSS and current anonymous / file-backed RSS;
- `run_fresh`: a command in a fresh process whose peak RSS does not start from ours, its last JSON line;
- `run_measured`: a whole command's wall seconds and peak RSS, run as a fresh process;
- `memory_increment`: a probe's peak RSS against the baseline probe that only imported the libraries;
- `choose_omp_policy` / `set_omp_policy`: torch's OpenMP wait policy, timed on this machine.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time


def memory_mib() -> dict:
    """Peak RSS (ru_maxrss, Linux: KiB), and the resident anonymous / file-backed memory now."""
    with open("/proc/self/status") as f:
        rss = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("RssAnon", "RssFile"))}
    return {"peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "anon_file_now": [round(rss["RssAnon"] / 1024, 1), round(rss["RssFile"] / 1024, 1)]}


def run_fresh(cmd: list, env: dict | None = None) -> dict:
    """Runs `cmd` and parses the last line of its stdout as JSON.

    Linux carries ru_maxrss across execve, so a child exec'd straight from a large process would report
    that process's peak. A small shell in between forks the command, whose ru_maxrss starts from the
    shell's."""
    out = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd], check=True, capture_output=True, text=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# started by a small Python of its own: the command's peak RSS (RUSAGE_CHILDREN) starts from that small
# process's, not ours (see run_fresh), and the clock runs around the command alone
_MEASURE = """import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
print(json.dumps({"rc": p.returncode, "wall_s": wall, "peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                  / 1024, "stdout": p.stdout[-8000:], "stderr": p.stderr[-8000:]}))
"""


def run_measured(cmd: list, env: dict | None = None, cwd: str | None = None) -> dict:
    """Runs `cmd` as a fresh process: its exit status, wall seconds (from its start to its exit, as seen
    by the small process that starts it), peak RSS in MiB, and the tails of its stdout and stderr."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], check=True, capture_output=True, text=True,
                         env=env, cwd=cwd)
    return json.loads(out.stdout.strip().splitlines()[-1])


def clock(fn):
    """fn's result, its wall seconds, and the CPU seconds (all threads) this process spent meanwhile."""
    c0, t0 = os.times(), time.perf_counter()
    out = fn()
    t1, c1 = time.perf_counter(), os.times()
    return out, t1 - t0, (c1.user + c1.system) - (c0.user + c0.system)


def summary(ours: list, ref: list, scale: float) -> dict:
    """Medians, ranges, the median of per-pair ratios ours/torch (each pair ran back to back), and CPU
    seconds per wall second: about the core count when the machine gives us all of it. `ours` and `ref`
    are lists of (wall, cpu) pairs from `clock`."""
    med, (ours, ours_cpu), (ref, ref_cpu) = statistics.median, zip(*ours), zip(*ref)
    return {"ours_median": round(med(ours) * scale, 3), "torch_median": round(med(ref) * scale, 3),
            "ours_min_max": [round(min(ours) * scale, 3), round(max(ours) * scale, 3)],
            "torch_min_max": [round(min(ref) * scale, 3), round(max(ref) * scale, 3)],
            "time_ratio_ours_over_torch": round(med(ours) / med(ref), 3),
            "median_pairwise_time_ratio": round(med(o / r for o, r in zip(ours, ref)), 3),
            "cpu_per_wall_ours_torch": [round(sum(ours_cpu) / sum(ours), 2), round(sum(ref_cpu) / sum(ref), 2)]}


def memory_increment(baseline: dict, probe: dict, phase: str) -> dict:
    """Peak RSS of a fresh process that ran `phase`, beside one that only imported the same libraries."""
    return {"import_baseline": baseline["peak"], f"peak_{phase}": probe["peak"],
            "increment": round(probe["peak"] - baseline["peak"], 1), "anon_file_now": probe["anon_file_now"]}


def choose_omp_policy(check: list, fixed: str = "auto") -> dict:
    """torch's OpenMP threads spin at barriers (libgomp's default wait policy): on this 2-core machine,
    shared with other work, one descheduled thread stalls every op, and a torch forward was seen 20x
    slower with 2 threads than with 1 (OMP_WAIT_POLICY=PASSIVE: as fast as 1 thread under load). So the
    `check` command (a short torch job printing {"seconds": [...]}) runs under both policies in fresh
    processes, and the faster one is used for every torch run that follows (it must be set before torch
    is imported). `fixed` (not "auto") chooses instead."""
    if fixed != "auto":
        return {"used": fixed, "chosen_by": "--torch-omp-wait-policy"}
    checks = {}
    for policy in ("default", "PASSIVE"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        checks[policy] = run_fresh(check, env=env)
    best = min(checks, key=lambda k: statistics.median(checks[k]["seconds"]))
    return {"used": best, "chosen_by": "the faster median of a short torch job in a fresh process per policy, "
                                       "'default' = libgomp's (OMP_WAIT_POLICY unset)",
            "check_s": {k: v["seconds"] for k, v in checks.items()}}


def set_omp_policy(policy: str) -> None:
    """OMP_WAIT_POLICY for this process's torch (before torch is imported) and for the torch processes."""
    os.environ.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        os.environ["OMP_WAIT_POLICY"] = policy
