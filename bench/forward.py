"""Forward-pass benchmark: uniarm_jax's Llama vs transformers' PyTorch Llama, SmolLM2-135M on CPU.

Prints one JSON object: prefill tokens/s, cached one-token decode latency and the peak host memory of
loading, for both implementations. Shared CPU machines are noisy (other jobs, stolen vCPU time), so
absolute numbers from different runs are not comparable; what this reports is the ratio ours/torch,
measured side by side in the same process on the same token ids, the two alternating repeat by repeat
(step by step for decode) so a noisy spell hits both, with medians and compilation excluded.

Loading memory is measured in fresh subprocesses, one per loader, each beside a baseline subprocess
that only imports the libraries, so the increment due to loading is visible. transformers mmaps the
safetensors and reads weights lazily, so its RSS right after loading is small; `after_reading_weights`
is its peak once every weight has been read (file-backed pages).

    PYTHONPATH=. .venv/bin/python bench/forward.py [--batch 4 --prompt-len 128 --steps 32 --repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

from common import clock, memory_mib, run_fresh, summary  # bench/ is sys.path[0]

MIB = 1024 * 1024
PROBES = ("jax-import", "jax-load", "torch-import", "torch-load", "torch-load-read")


def _probe(kind: str, model_dir: str) -> None:
    """In a fresh subprocess: import one library stack, optionally load the model, print its memory."""
    if kind.startswith("jax"):
        import jax

        import uniarm_jax
        jax.devices()  # the CPU client belongs to the baseline, not to the load
        if kind == "jax-load":
            handle = uniarm_jax.load_pretrained(model_dir, dtype="float32")  # kept alive for "now"
            jax.block_until_ready(handle.params)
    else:
        import torch
        from transformers import LlamaForCausalLM
        if kind.startswith("torch-load"):
            model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
            if kind == "torch-load-read":  # the weights are mmap'd: reading them faults the pages in
                with torch.inference_mode():
                    sum(float(p.sum()) for p in model.parameters())
    print(json.dumps(memory_mib()))


def _run_probe(kind: str, model_dir: str) -> dict:
    return run_fresh([sys.executable, os.path.abspath(__file__), "--model-dir", model_dir, "--_probe", kind])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=None, help="HF directory (default: prepare_smollm2())")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=32, help="decode steps per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--_probe", choices=PROBES, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model_dir is None:
        from uniarm_jax.hf.smollm2 import prepare_smollm2
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
    from uniarm_jax.decode import engine
    from uniarm_jax.model.llama import Llama

    B, L, N, R = args.batch, args.prompt_len, args.steps, args.repeats
    handle = load_pretrained(args.model_dir, dtype="float32")
    cfg, params, model = handle.config, handle.params, Llama(handle.config)
    weights = engine.decode_weights(handle)  # the decode engine's per-layer layout
    ref = LlamaForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (B, L), dtype=np.int32)
    step_ids = rng.integers(0, cfg.vocab_size, (N, B, 1), dtype=np.int32)  # teacher-forced, same for both
    j_ids, j_mask, j_one = jnp.asarray(ids), jnp.ones((B, L), jnp.int32), jnp.ones((B, 1), jnp.int32)
    t_ids, t_mask = torch.from_numpy(ids.astype(np.int64)), torch.ones((B, L), dtype=torch.int64)
    j_steps = [jnp.asarray(t) for t in step_ids]
    t_steps = [torch.from_numpy(t.astype(np.int64)) for t in step_ids]

    @jax.jit
    def prefill(params, ids, mask):  # the full forward, every position's logits (as torch's prefill)
        return model.apply({"params": params}, ids, mask)

    @jax.jit
    def cache_prefill(weights, ids, mask):  # the engine's prefill: the cache the decode steps start from
        cache = engine.init_cache(cfg, ids.shape[0], ids.shape[1] + N)
        return engine.forward(cfg, None, weights, cache, ids, mask)[1]

    def step(weights, cache, token, mask):  # the cache is donated: XLA updates it in place
        return engine.forward(cfg, None, weights, cache, token, mask)
    decode_step = jax.jit(step, donate_argnums=(1,))

    def torch_prefill():
        return ref(input_ids=t_ids, attention_mask=t_mask, use_cache=True)

    with torch.inference_mode():
        # Warm-up (XLA compiles, torch's first-call allocations) and the agreement check.
        ours_logits = jax.block_until_ready(prefill(params, j_ids, j_mask))
        prefill_diff = float(np.max(np.abs(np.asarray(ours_logits) - torch_prefill().logits.numpy())))

        # 1. prefill, ours and torch alternating.
        ours_pf, torch_pf = [], []
        for _ in range(R):
            ours_pf.append(clock(lambda: jax.block_until_ready(prefill(params, j_ids, j_mask)))[1:])
            torch_pf.append(clock(torch_prefill)[1:])

        # 2. decode: per repeat, copies of the prefilled caches, then N one-token steps, ours and torch
        # alternating step by step. Repeat 0 is a warm-up (it compiles the step).
        cache0 = jax.block_until_ready(cache_prefill(weights, j_ids, j_mask))
        past0 = torch_prefill().past_key_values
        ours_dec, torch_dec = [], []
        for r in range(R + 1):
            cache, past = jax.tree.map(jnp.copy, cache0), copy.deepcopy(past0)
            for j_tok, t_tok in zip(j_steps, t_steps):
                (ours_last, cache), *t_ours = clock(
                    lambda: jax.block_until_ready(decode_step(weights, cache, j_tok, j_one)))
                out, *t_torch = clock(lambda: ref(input_ids=t_tok, past_key_values=past, use_cache=True))
                past = out.past_key_values  # the same DynamicCache, grown in place
                if r:
                    ours_dec.append(t_ours)
                    torch_dec.append(t_torch)
        decode_diff = float(np.max(np.abs(np.asarray(ours_last) - out.logits[:, -1].numpy())))

    # 3. memory of loading, each loader in a fresh subprocess.
    mem = {k: _run_probe(k, args.model_dir) for k in PROBES}
    st_bytes = sum(os.path.getsize(os.path.join(args.model_dir, f))
                   for f in os.listdir(args.model_dir) if f.endswith(".safetensors"))

    def loader(lib: str) -> dict:
        base, load = mem[f"{lib}-import"]["peak"], mem[f"{lib}-load"]["peak"]
        return {"import_baseline": base, "after_load": load, "increment": round(load - base, 1),
                "anon_file_now": mem[f"{lib}-load"]["anon_file_now"]}

    dev = jax.devices()[0]
    prefill_s = summary(ours_pf, torch_pf, 1.0)
    result = {
        "meta": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                 "device_kind": dev.device_kind, "platform": dev.platform, "torch_threads": torch.get_num_threads(),
                 "cpu_count": os.cpu_count(), "model_dir": args.model_dir, "batch": B, "prompt_len": L,
                 "steps": N, "repeats": R},
        "sanity": {"prefill_max_abs_logit_diff": prefill_diff, "decode_last_step_max_abs_logit_diff": decode_diff},
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": {"ours": round(B * L / prefill_s["ours_median"], 1),
                                 "torch": round(B * L / prefill_s["torch_median"], 1),
                                 "ratio_ours_over_torch":
                                     round(prefill_s["torch_median"] / prefill_s["ours_median"], 3)},
        "decode_step_ms": summary(ours_dec, torch_dec, 1e3),
        "load_memory_mib": {
            "safetensors_file": round(st_bytes / MIB, 1), "ours": loader("jax"),
            "torch": {**loader("torch"), "after_reading_weights": mem["torch-load-read"]["peak"],
                      "anon_file_now_after_reading": mem["torch-load-read"]["anon_file_now"]}},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
