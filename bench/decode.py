"""Guided-decoding benchmark: base + MoSLoRA ARM under a preference α, ours vs a PyTorch loop (CPU), and
the decode step against the memory-bandwidth bound on a GPU.

CPU (default): SmolLM2-135M-Instruct as the frozen base plus a 135M UniARM-style ARM (the same SmolLM2
weights + a MoSLoRA adapter, r=8, k=2, on q/k/v, its zero-initialised leaves G, H, B made random so the
ARM is not the base). Ours is `uniarm_jax.decode.guided_generate`: one compiled `lax.while_loop` rollout
carrying both models' KV caches. The reference is what the authors' code does, in PyTorch: transformers'
`LlamaForCausalLM` for the base and for the ARM (exported with `uniarm_jax.hf.peft.export_merged` at the
benchmark's fixed α: the adapter merged into the kernels, MoSLoRA's shift a bias), each with its own
`past_key_values`, combined in a Python loop as `log_softmax(base) + w * log_softmax(arm)`, greedy. EOS is
turned off so every run decodes exactly `--new-tokens` tokens. As in bench/forward.py and bench/train.py:
ours and torch alternate repeat by repeat in one process, medians / ranges / ratios come from the same
run, the first call (compilation) is reported apart, and peak host memory is measured in fresh
subprocesses beside import-only baselines. Also: the 11-point α grid for one prompt as one batched call
of 11 rows vs 11 sequential batch-1 calls (ours).

--gpu: a Llama-7B-shaped base and a Llama-7B-shaped MoSLoRA ARM (its own random bf16 weights, made on the
device, no files), batch 1 and 16, prompt 128: decode-step time = (rollout of N new tokens - rollout of 1
new token) / (N - 1), against the HBM bound (bytes read per step / bandwidth).

    PYTHONPATH=. .venv/bin/python bench/decode.py [--batches 1,16 --prompt-len 32 --new-tokens 16 --repeats 3]
    PYTHONPATH=. python bench/decode.py --gpu [--batches 1,16 --prompt-len 128 --new-tokens 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

from common import clock, memory_increment, memory_mib, run_fresh, summary  # bench/ is this script's sys.path[0]

PROBES = ("jax-import", "jax-decode", "torch-import", "torch-decode")
ACFG = dict(kind="moslora", rank=8, num_objectives=2)  # targets q,k,v (the default); dropout off in decoding
# HBM bandwidth (bytes/s) by device kind substring, first match wins (vendor data sheets).
HBM_BW = (("H100 PCIe", 2.0e12), ("H100 NVL", 3.9e12), ("H100", 3.35e12), ("H200", 4.8e12), ("H800", 3.35e12),
          ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12), ("L40S", 0.864e12),
          ("L4", 0.3e12), ("A10", 0.6e12))
QUESTIONS = (
    "What is the capital of France?", "Explain photosynthesis in simple terms.",
    "Write a short poem about the sea.", "How do I make a cup of green tea?",
    "Why is the sky blue?", "Give me three tips for learning a new language.",
    "What are the health benefits of walking every day?", "Summarise the plot of Romeo and Juliet.",
    "How does a refrigerator keep food cold?", "What should I pack for a weekend camping trip?",
    "Describe the water cycle.", "How can I improve my sleep?",
    "What is the difference between a virus and a bacterium?", "Suggest a name for a friendly robot.",
    "How do vaccines work?", "Tell me a fun fact about octopuses.",
)


# ------------------------------------------------------------------------------------------- shared

def make_prompts(tokenizer, n: int, length: int) -> list[list[int]]:
    """`n` chat-templated prompts of exactly `length` tokens (the last `length` of each; a short one is
    lengthened with a filler sentence), so no row is padded and torch needs no attention mask."""
    def encode(text):
        if getattr(tokenizer, "chat_template", None):
            return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                      tokenize=True, return_dict=True)["input_ids"])
        return tokenizer.encode(text)
    out = []
    for i in range(n):
        q, filler = QUESTIONS[i % len(QUESTIONS)], ""
        while len(ids := encode(filler + q)) < length:
            filler += "Please answer helpfully. "
        out.append(ids[-length:])
    return out


def randomize_adapter(arm, scale: float, seed: int = 1):
    """The ARM with its zero-initialised adapter leaves (MoSLoRA's G, H, B) drawn from scale*N(0, 1); A
    and S keep their (random) initialisation. Deterministic in `seed`."""
    import jax
    import jax.numpy as jnp
    leaves, treedef = jax.tree_util.tree_flatten_with_path(arm.adapter)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [scale * jax.random.normal(k, x.shape, x.dtype) if str(path[-1].key) in ("G", "H", "B") else x
           for k, (path, x) in zip(keys, leaves)]
    return dataclasses.replace(arm, adapter=jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in new]))


def load_ours(model_dir: str, scale: float):
    """(base, arm) handles in float32 with EOS turned off (every rollout runs exactly max_new_tokens)."""
    import uniarm_jax
    from uniarm_jax.model.adapters import AdapterConfig
    from uniarm_jax.model.arm import init_adapter
    base = uniarm_jax.load_pretrained(model_dir, dtype="float32")
    base = dataclasses.replace(base, config=base.config.replace(eos_token_id=None))
    return base, randomize_adapter(init_adapter(base, AdapterConfig(**ACFG)), scale)


def ours_generate(base, arm, prompts, n: int, pref):
    """Greedy guided decoding, `[batch, n]` token ids (exactly n steps: EOS is off)."""
    import numpy as np

    from uniarm_jax.decode.rollout import guided_generate
    from uniarm_jax.decode.sampling import Sampler
    tokens, steps = guided_generate(base, [arm], prompts, n, pref=pref, sampler=Sampler(0.0))
    assert steps == n, (steps, n)
    return np.asarray(tokens)


def load_torch(model_dir: str, merged_dir: str):
    import torch
    from transformers import LlamaForCausalLM
    base = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    arm = LlamaForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    return base, arm


def torch_generate(base, arm, ids, n: int, w: float = 1.0):
    """The authors' loop: each model with its own KV cache, `log_softmax(base) + w log_softmax(arm)`,
    greedy; the prompt forward keeps only the last position's logits (as transformers' generate does)."""
    import numpy as np
    import torch
    with torch.inference_mode():
        x = torch.from_numpy(np.asarray(ids, np.int64))
        ob = base(input_ids=x, use_cache=True, logits_to_keep=1)
        oa = arm(input_ids=x, use_cache=True, logits_to_keep=1)
        past_b, past_a, out = ob.past_key_values, oa.past_key_values, []
        for i in range(n):
            logp = torch.log_softmax(ob.logits[:, -1].float(), -1) + w * torch.log_softmax(oa.logits[:, -1].float(), -1)
            tok = logp.argmax(-1, keepdim=True)
            out.append(tok)
            if i + 1 < n:  # the last token needs no forward
                ob = base(input_ids=tok, past_key_values=past_b, use_cache=True)
                oa = arm(input_ids=tok, past_key_values=past_a, use_cache=True)
        return torch.cat(out, 1).numpy()


def agreement(a, b) -> dict:
    """Greedy tokens of two implementations, `[batch, n]` each."""
    import numpy as np
    a, b = np.asarray(a), np.asarray(b)
    same = a == b
    prefix = [int(np.argmin(row)) if not row.all() else row.size for row in same]
    return {"first_token": round(float(same[:, 0].mean()), 3), "all_positions": round(float(same.mean()), 3),
            "rows_identical": round(float(same.all(1).mean()), 3),
            "mean_common_prefix_len": round(float(np.mean(prefix)), 2), "min_common_prefix_len": int(min(prefix))}


# ------------------------------------------------------------------------------------------------ CPU

def _probe(kind: str, a) -> None:
    """In a fresh subprocess: import one stack, optionally load both models and decode the largest batch
    once (ours: compilation included); print the memory."""
    if kind.startswith("jax"):
        import jax

        import uniarm_jax  # noqa: F401
        jax.devices()
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    if kind.endswith("decode"):
        import uniarm_jax
        prompts = make_prompts(uniarm_jax.load_tokenizer(a.model_dir), max(a.batches), a.prompt_len)
        if kind.startswith("jax"):
            base, arm = load_ours(a.model_dir, a.adapter_scale)
            ours_generate(base, arm, prompts, a.new_tokens, a.pref)
        else:
            base, arm = load_torch(a.model_dir, a.merged_dir)
            torch_generate(base, arm, prompts, a.new_tokens)
    print(json.dumps(memory_mib()))


def cpu_main(a) -> dict:
    import jax
    import numpy as np
    import torch
    import transformers

    import uniarm_jax
    from uniarm_jax.decode.rollout import _rollout
    from uniarm_jax.hf.peft import export_merged

    t_start = time.perf_counter()
    n, L = a.new_tokens, a.prompt_len
    base, arm = load_ours(a.model_dir, a.adapter_scale)
    tokenizer = uniarm_jax.load_tokenizer(a.model_dir)
    prompts = make_prompts(tokenizer, max(a.batches), L)
    tmp = tempfile.TemporaryDirectory(prefix="decode_bench_")
    a.merged_dir = os.path.join(tmp.name, "arm_merged")
    export_merged(arm, a.merged_dir, pref=a.pref)
    tbase, tarm = load_torch(a.model_dir, a.merged_dir)

    out = {}
    for b in a.batches:
        rows = prompts[:b]
        (ours_tok, first_ours, _), (torch_tok, first_torch, _) = (
            clock(lambda: ours_generate(base, arm, rows, n, a.pref)),
            clock(lambda: torch_generate(tbase, tarm, rows, n)))
        cache_after_warmup = _rollout._cache_size()
        ours_t, torch_t = [], []
        for _ in range(a.repeats):
            ours_t.append(clock(lambda: ours_generate(base, arm, rows, n, a.pref))[1:])
            torch_t.append(clock(lambda: torch_generate(tbase, tarm, rows, n))[1:])
        s = summary(ours_t, torch_t, 1.0)
        out[f"batch_{b}"] = {
            "rollout_s": s,
            "tokens_per_s": {"ours": round(b * n / s["ours_median"], 1), "torch": round(b * n / s["torch_median"], 1),
                             "ratio_ours_over_torch": round(s["torch_median"] / s["ours_median"], 3)},
            "first_call_s": {"ours_trace_compile_run": round(first_ours, 3), "torch": round(first_torch, 3),
                             "ours_compile_estimate": round(first_ours - s["ours_median"], 3)},
            "greedy_agreement_ours_vs_torch": agreement(ours_tok, torch_tok),
            "recompiled_during_repeats": _rollout._cache_size() != cache_after_warmup,
        }

    # the α grid for one prompt: one batched call of 11 rows vs 11 sequential batch-1 calls; the first
    # call of each shape (batch 11, batch 1) compiles and is not timed with the rest
    alphas = [round(0.1 * i, 1) for i in range(11)]
    grid = [[x, round(1 - x, 1)] for x in alphas]
    p0, gn = prompts[0], a.grid_new_tokens
    batched = lambda: ours_generate(base, arm, [p0] * len(grid), gn, grid)  # noqa: E731
    sequential = lambda: np.concatenate([ours_generate(base, arm, [p0], gn, g) for g in grid])  # noqa: E731
    first_batched = clock(batched)[1]
    first_single = clock(lambda: ours_generate(base, arm, [p0], gn, grid[0]))[1]
    cache_before = _rollout._cache_size()
    bt, st = [], []
    for _ in range(a.grid_repeats):
        tok_batched, *t = clock(batched)
        bt.append(t)
        tok_seq, *t = clock(sequential)
        st.append(t)
    med, bw_, sw_ = statistics.median, [t[0] for t in bt], [t[0] for t in st]
    out["alpha_grid_11"] = {
        "new_tokens": gn, "batched_s_median": round(med(bw_), 3),
        "batched_s_min_max": [round(min(bw_), 3), round(max(bw_), 3)],
        "sequential_s_median": round(med(sw_), 3), "sequential_s_min_max": [round(min(sw_), 3), round(max(sw_), 3)],
        "speedup_batched_over_sequential": round(med(sw_) / med(bw_), 2),
        "cpu_per_wall_batched_sequential": [round(sum(t[1] for t in bt) / sum(bw_), 2),
                                            round(sum(t[1] for t in st) / sum(sw_), 2)],
        "first_call_s": {"batched_trace_compile_run": round(first_batched, 3),
                         "single_row_trace_compile_run": round(first_single, 3)},
        "batched_equals_sequential": agreement(tok_batched, tok_seq),
        "distinct_outputs_over_alpha": len({tuple(r) for r in tok_batched.tolist()}),
        "recompiled_during_repeats": _rollout._cache_size() != cache_before,
    }
    compiled = _rollout._cache_size()

    mem = {k: run_fresh([sys.executable, os.path.abspath(__file__), "--_probe", k, "--merged-dir", a.merged_dir]
                        + a.forward_args) for k in PROBES}
    tmp.cleanup()

    def side(lib):
        return memory_increment(mem[f"{lib}-import"], mem[f"{lib}-decode"], "decode")

    return {
        "meta": {"mode": "cpu", "jax": jax.__version__, "torch": torch.__version__,
                 "transformers": transformers.__version__, "device_kind": jax.devices()[0].device_kind,
                 "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "model_dir": a.model_dir,
                 "models": "base SmolLM2-135M-Instruct + ARM = the same weights + MoSLoRA r=8 k=2 on q,k,v "
                           f"(G, H, B ~ {a.adapter_scale}*N(0,1)), float32, EOS off",
                 "pref": a.pref, "arm_weight": 1.0, "batches": a.batches, "prompt_len": L, "new_tokens": n,
                 "repeats": a.repeats, "grid_repeats": a.grid_repeats,
                 "wall_s": round(time.perf_counter() - t_start, 1), "rollout_compilations": compiled,
                 "reference": "transformers LlamaForCausalLM base + ARM exported merged at pref (export_merged), "
                              "own past_key_values each, python loop, log_softmax(base)+w*log_softmax(arm), "
                              "greedy, logits_to_keep=1 on the prompt; n-1 decode forwards per model (ours runs n: "
                              "its loop also advances both caches past the last token)",
                 "timing": "rollout_s = wall seconds of one whole generate call (prefill + decode, host "
                           "round trip included); tokens_per_s = batch*new_tokens / median"},
        **out,
        "peak_memory_mib": {"ours": side("jax"), "torch": side("torch"),
                            "ratio_increment_ours_over_torch":
                                round(side("jax")["increment"] / side("torch")["increment"], 3),
                            "what": f"fresh process: load base + ARM, decode batch {max(a.batches)} once "
                                    "(ours: compile included)"},
    }


# ------------------------------------------------------------------------------------------------ GPU

def gpu_main(a) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from uniarm_jax.decode.rollout import _rollout
    from uniarm_jax.model.adapters import AdapterConfig
    from uniarm_jax.model.arm import adapter_shapes
    from uniarm_jax.model.config import LlamaConfig
    from uniarm_jax.model.handle import ModelHandle
    from uniarm_jax.model.llama import count_params, param_shapes

    dev = jax.devices()[0]
    h, f, n_layers, heads, vocab = ((4096, 11008, 32, 32, 32000) if a.model == "7b" else (256, 688, 2, 4, 512))
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=h, intermediate_size=f, num_hidden_layers=n_layers,
                      num_attention_heads=heads, num_key_value_heads=heads, head_dim=h // heads,
                      max_position_embeddings=4096, eos_token_id=None, pad_token_id=0,
                      param_dtype="bfloat16", dtype="bfloat16")
    acfg = AdapterConfig(**ACFG)

    def random_tree(shapes, scale):
        """N(0, scale) per leaf in the leaf's dtype, made on the device (RMSNorm weights: ones)."""
        leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)

        @jax.jit
        def make(key):
            keys = jax.random.split(key, len(leaves))
            return jax.tree_util.tree_unflatten(treedef, [
                jnp.ones(x.shape, x.dtype) if "norm" in jax.tree_util.keystr(p)
                else scale * jax.random.normal(k, x.shape, x.dtype) for k, (p, x) in zip(keys, leaves)])
        return make

    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"{dev.device_kind}: making random weights")
    shapes = param_shapes(cfg)
    make_params = random_tree(shapes, 0.02)
    base_params = jax.block_until_ready(make_params(jax.random.key(0)))
    arm_params = jax.block_until_ready(make_params(jax.random.key(1)))
    adapter = jax.block_until_ready(random_tree(adapter_shapes(cfg, acfg), 0.02)(jax.random.key(2)))
    init_s = time.perf_counter() - t0
    base = ModelHandle(cfg, base_params)
    arm = ModelHandle(cfg, arm_params, adapter_config=acfg, adapter=adapter)

    nbytes = lambda tree: int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))  # noqa: E731
    emb_bytes = vocab * h * 2
    weights_read = nbytes(shapes) - emb_bytes  # per model and step: every weight but the embedding table
    adapter_bytes = nbytes(adapter)
    bw = a.hbm_bw or next((v for k, v in HBM_BW if k in dev.device_kind), None)
    n, L = a.new_tokens, a.prompt_len
    rng = np.random.default_rng(0)

    def kv_bytes(b, length):  # k and v, every layer, one model, bf16
        return 2 * n_layers * b * length * cfg.num_key_value_heads * cfg.head_dim * 2

    out = {}
    for b in a.batches:
        r = out[f"batch_{b}"] = {}
        try:
            prompts = rng.integers(3, vocab, (b, L)).tolist()
            pref = [[x, 1 - x] for x in np.linspace(0, 1, b)] if b > 1 else [0.3, 0.7]
            full = lambda: ours_generate(base, arm, prompts, n, pref)  # noqa: E731
            short = lambda: ours_generate(base, arm, prompts, 1, pref)  # noqa: E731
            r["first_call_s"] = {"rollout_n": round(clock(full)[1], 2), "rollout_1": round(clock(short)[1], 2)}
            log(f"batch {b}: compiled, first calls {r['first_call_s']}")
            tf, ts = [], []
            for _ in range(a.repeats):  # alternate, so a slow spell hits both
                tf.append(clock(full)[1])
                ts.append(clock(short)[1])
            med = statistics.median
            step = (med(tf) - med(ts)) / (n - 1)
            # decode steps 2..n attend over L+2 .. L+n tokens; ours reads the whole allocated cache (L+n slots)
            mean_len = L + 1 + n / 2
            ideal = 2 * weights_read + 2 * kv_bytes(b, mean_len) + adapter_bytes
            as_built = 2 * weights_read + 2 * kv_bytes(b, L + n) + adapter_bytes
            r.update({
                "rollout_n_s_median": round(med(tf), 4), "rollout_n_s_min_max": [round(min(tf), 4), round(max(tf), 4)],
                "rollout_1_s_median": round(med(ts), 4), "rollout_1_s_min_max": [round(min(ts), 4), round(max(ts), 4)],
                "decode_step_ms": round(step * 1e3, 3),
                "decode_step_ms_pairwise_median": round(med((x - y) / (n - 1) for x, y in zip(tf, ts)) * 1e3, 3),
                "prefill_plus_first_step_ms": round(med(ts) * 1e3, 2),
                "decode_tokens_per_s": round(b / step, 1),
                "bytes_per_step": {"weights_both_models": 2 * weights_read, "kv_both_models_at_mean_len":
                                   int(2 * kv_bytes(b, mean_len)), "adapter": adapter_bytes, "total": int(ideal),
                                   "total_reading_allocated_cache": int(as_built)},
                "achieved_tb_per_s": round(ideal / step / 1e12, 3) if step > 0 else None,
            })
            if bw and step > 0:
                r["bound_step_ms"] = round(ideal / bw * 1e3, 3)
                r["fraction_of_bound"] = round(ideal / bw / step, 3)
                r["fraction_of_bound_counting_allocated_cache"] = round(as_built / bw / step, 3)
            log(f"batch {b}: decode step {r['decode_step_ms']} ms, {r.get('fraction_of_bound')} of the bound")
            stats = dev.memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
            r["peak_device_gib"] = None if peak is None else round(peak / 2**30, 2)
        except Exception as e:  # e.g. out of memory: keep the other batch's numbers
            r["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    return {
        "meta": {"mode": "gpu", "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                 "device_kind": dev.device_kind, "hbm_bytes_per_s_used": bw,
                 "model": f"llama {a.model} x2 (base + ARM, separate random bf16 weights): hidden {h}, mlp {f}, "
                          f"{n_layers} layers, {heads} heads, vocab {vocab}; ARM + MoSLoRA r=8 k=2 on q,k,v "
                          "(float32 adapter)",
                 "params_per_model": count_params(shapes), "adapter_params": count_params(adapter),
                 "param_init_s": round(init_s, 2), "wall_s": round(time.perf_counter() - t0, 1),
                 "prompt_len": L, "new_tokens": n, "repeats": a.repeats, "rollout_compilations": _rollout._cache_size(),
                 "method": "decode_step = (median rollout with new_tokens=n - median rollout with new_tokens=1) / "
                           "(n-1); both include the prefill, the first decode step and the host round trip, "
                           "which cancel. bound = bytes/HBM bandwidth, bytes = both models' weights in bf16 "
                           "(all but the embedding table, of which a step reads only batch rows) + both KV "
                           "caches at the mean attended length L+1+n/2 + the adapter; fraction_of_bound = "
                           "bound / measured step (1 = at the bandwidth roofline)",
                 "hbm_table": {k: v for k, v in HBM_BW}},
        **out,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="the GPU mode (Llama-7B shapes, random bf16 weights)")
    p.add_argument("--model", choices=("7b", "tiny"), default="7b", help="--gpu model shape (tiny: smoke test)")
    p.add_argument("--hbm-bw", type=float, default=None, help="--gpu: override the HBM bandwidth (bytes/s)")
    p.add_argument("--model-dir", default=None, help="CPU: HF directory (default: prepare_smollm2())")
    p.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens (default: CPU 32, GPU 128)")
    p.add_argument("--new-tokens", type=int, default=None, help="generated tokens (default: CPU 16, GPU 64)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default: CPU 3, GPU 5)")
    p.add_argument("--grid-repeats", type=int, default=2, help="CPU: timed repeats of the α-grid comparison")
    p.add_argument("--grid-new-tokens", type=int, default=None, help="CPU: generated tokens in the α-grid comparison "
                   "(default: --new-tokens)")
    p.add_argument("--pref", default="0.3,0.7", help="CPU: the fixed α of the ours-vs-torch comparison")
    p.add_argument("--adapter-scale", type=float, default=0.1, help="CPU: std of the adapter's G, H, B")
    p.add_argument("--merged-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_probe", choices=PROBES, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.batches = [int(x) for x in a.batches.split(",")]
    a.prompt_len = a.prompt_len or (128 if a.gpu else 32)
    a.new_tokens = a.new_tokens or (64 if a.gpu else 16)
    a.grid_new_tokens = a.grid_new_tokens or a.new_tokens
    a.repeats = a.repeats or (5 if a.gpu else 3)
    if a.gpu:
        return print(json.dumps(gpu_main(a), indent=2))
    a.pref = [float(x) for x in a.pref.split(",")]
    if a.model_dir is None:
        from uniarm_jax.hf.smollm2 import prepare_smollm2
        a.model_dir = prepare_smollm2(log=lambda m: print(m, file=sys.stderr))
    a.forward_args = [f"--model-dir={a.model_dir}", f"--batches={','.join(map(str, a.batches))}",
                      f"--prompt-len={a.prompt_len}", f"--new-tokens={a.new_tokens}",
                      f"--pref={','.join(map(str, a.pref))}", f"--adapter-scale={a.adapter_scale}"]
    if a._probe:
        return _probe(a._probe, a)
    print(json.dumps(cpu_main(a), indent=2))


if __name__ == "__main__":
    main()
