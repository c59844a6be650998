"""Forward-pass benchmark: uniarm_jax's Llama vs transformers' PyTorch Llama, SmolLM2-135M on CPU.

Prints one JSON object: prefill tokens/s, cached one-token decode latency and the peak host memory of
loading, for both implementations. Shared CPU machines are noisy (other jobs, frequency scaling), so
absolute numbers from different runs are not comparable; what this reports is the ratio ours/torch,
measured side by side in the same process on the same token ids, with medians over repeats and
compilation excluded. Loading memory is measured in fresh subprocesses, one per loader, each beside a
baseline subprocess that only imports the libraries, so the increment due to loading is visible.

    PYTHONPATH=. .venv/bin/python bench/forward.py [--batch 4 --prompt-len 128 --steps 32 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MIB = 1024 * 1024


def _peak_mib() -> dict:
    """ru_maxrss (Linux: KiB), and the kernel's VmHWM of this process's address space as a cross-check."""
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return {"ru_maxrss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "vmhwm": round(hwm / 1024, 1)}


def _probe(kind: str, model_dir: str) -> None:
    """Run in a fresh subprocess: import one library stack, optionally load, print peak RSS."""
    if kind.startswith("jax"):
        import jax
        import uniarm_jax
        jax.devices()  # the CPU client belongs to the baseline, not to the load
        if kind == "jax-load":
            jax.block_until_ready(uniarm_jax.load_pretrained(model_dir, dtype="float32").params)
    else:
        import torch
        from transformers import LlamaForCausalLM
        if kind == "torch-load":
            LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    print(json.dumps(_peak_mib()))


def _run_probe(kind: str, model_dir: str) -> dict:
    # Linux carries ru_maxrss across execve: a child exec'd straight from this (large) process would
    # report our peak. A small shell in between forks the probe, so its ru_maxrss starts from the shell's.
    cmd = [sys.executable, os.path.abspath(__file__), "--model-dir", model_dir, "--_probe", kind]
    out = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=None, help="HF directory (default: prepare_smollm2())")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=32, help="decode steps per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model_dir is None:
        from uniarm_jax.smollm2 import prepare_smollm2
        args.model_dir = prepare_smollm2(log=lambda m: print(m, file=sys.stderr))
    if args._probe:
        return _probe(args._probe, args.model_dir)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers
    from transformers import LlamaForCausalLM

    from uniarm_jax import load_pretrained
    from uniarm_jax.model import Llama, init_cache

    B, L, N, R = args.batch, args.prompt_len, args.steps, args.repeats
    handle = load_pretrained(args.model_dir, dtype="float32")
    cfg, params = handle.config, handle.params
    ref = LlamaForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    model = Llama(cfg)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (B, L), dtype=np.int32)
    steps_ids = rng.integers(0, cfg.vocab_size, (N, B, 1), dtype=np.int32)  # teacher-forced, same for both
    j_ids, j_mask = jnp.asarray(ids), jnp.ones((B, L), jnp.int32)
    j_steps, j_one = [jnp.asarray(t) for t in steps_ids], jnp.ones((B, 1), jnp.int32)
    t_ids, t_mask = torch.from_numpy(ids.astype(np.int64)), torch.ones((B, L), dtype=torch.int64)
    t_steps = [torch.from_numpy(t.astype(np.int64)) for t in steps_ids]

    @jax.jit
    def prefill(params, ids, mask):
        cache = init_cache(cfg, ids.shape[0], ids.shape[1] + N)
        logits, state = model.apply({"params": params, "cache": cache}, ids, mask, mutable=["cache"])
        return logits, state["cache"]

    def step(params, cache, token, mask):  # the cache is donated: updated in place, no copy per step
        logits, state = model.apply({"params": params, "cache": cache}, token, mask, mutable=["cache"])
        return logits[:, -1], state["cache"]
    decode_step = jax.jit(step, donate_argnums=(1,))

    def torch_prefill():
        return ref(input_ids=t_ids, attention_mask=t_mask, use_cache=True)

    with torch.inference_mode():
        # 1. prefill, warmed up (XLA compile, torch first-call allocations) and checked against each other
        ours_logits = jax.block_until_ready(prefill(params, j_ids, j_mask))[0]
        ref_logits = torch_prefill().logits
        prefill_diff = float(np.max(np.abs(np.asarray(ours_logits) - ref_logits.numpy())))
        ours_pf = _timed(lambda: jax.block_until_ready(prefill(params, j_ids, j_mask)), R)
        torch_pf = _timed(torch_prefill, R)

        # 2. decode: per repeat, a fresh (untimed) prefill, then N timed one-token steps; repeat 0 is warm-up
        ours_dec, torch_dec = [], []
        for r in range(R + 1):
            cache = jax.block_until_ready(prefill(params, j_ids, j_mask))[1]
            for tok in j_steps:
                t0 = time.perf_counter()
                ours_last, cache = jax.block_until_ready(decode_step(params, cache, tok, j_one))
                ours_dec.append((r, time.perf_counter() - t0))
            past = torch_prefill().past_key_values
            for tok in t_steps:
                t0 = time.perf_counter()
                out = ref(input_ids=tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
                torch_dec.append((r, time.perf_counter() - t0))
        ours_dec, torch_dec = ([t for r, t in ts if r > 0] for ts in (ours_dec, torch_dec))
        decode_diff = float(np.max(np.abs(np.asarray(ours_last) - out.logits[:, -1].numpy())))

    # 3. peak host memory of loading, each in a fresh subprocess
    mem = {k: _run_probe(k, args.model_dir) for k in ("jax-import", "jax-load", "torch-import", "torch-load")}
    st_bytes = sum(os.path.getsize(os.path.join(args.model_dir, f))
                   for f in os.listdir(args.model_dir) if f.endswith(".safetensors"))

    med = statistics.median
    pf_ours, pf_torch = med(ours_pf), med(torch_pf)
    dec_ours, dec_torch = med(ours_dec) * 1e3, med(torch_dec) * 1e3
    dev = jax.devices()[0]
    result = {
        "meta": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                 "device_kind": dev.device_kind, "platform": dev.platform, "torch_threads": torch.get_num_threads(),
                 "cpu_count": os.cpu_count(), "model_dir": args.model_dir, "batch": B, "prompt_len": L,
                 "steps": N, "repeats": R},
        "sanity": {"prefill_max_abs_logit_diff": prefill_diff, "decode_last_step_max_abs_logit_diff": decode_diff},
        "prefill": {"ours_median_s": round(pf_ours, 4), "torch_median_s": round(pf_torch, 4),
                    "ours_tokens_per_s": round(B * L / pf_ours, 1), "torch_tokens_per_s": round(B * L / pf_torch, 1),
                    "tokens_per_s_ratio_ours_over_torch": round(pf_torch / pf_ours, 3)},
        "decode_step": {"ours_median_ms": round(dec_ours, 3), "torch_median_ms": round(dec_torch, 3),
                        "latency_ratio_ours_over_torch": round(dec_ours / dec_torch, 3)},
        "load_memory_mib": {"safetensors_file": round(st_bytes / MIB, 1), **{
            f"{who}_{what}": mem[f"{kind}-{probe}"]["ru_maxrss"] for who, kind in (("ours", "jax"), ("torch", "torch"))
            for what, probe in (("import_baseline", "import"), ("after_load", "load"))}, **{
            f"{who}_increment": round(mem[f"{kind}-load"]["ru_maxrss"] - mem[f"{kind}-import"]["ru_maxrss"], 1)
            for who, kind in (("ours", "jax"), ("torch", "torch"))},
            "vmhwm_cross_check": {k: v["vmhwm"] for k, v in mem.items()}},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
