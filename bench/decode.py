"""Guided-decoding benchmark: SmolLM2-135M + a 6-layer ARM, ours vs PyTorch and this machine's bounds.

On the CPU (default), ours against a PyTorch loop and against bounds measured on this machine in the
same run; with --gpu, the decode step against the HBM bound.

CPU (default). The setting: the base is SmolLM2-135M-Instruct; the ARM is its first 6 decoder layers
(with its embedding, final norm and tied head, `truncate_layers(base, 6)`) written as a plain Hugging Face
directory in a temp dir and loaded by both sides as a model of its own (a fully fine-tuned ARM); float32;
next token = argmax of `log_softmax(base) + 0.5 * log_softmax(arm)`. Ours is
`uniarm_jax.decode.guided_generate(base, [arm], prompts, n, arm_weights=[0.5])`, one compiled rollout
carrying both models' KV caches. The reference is the authors' loop in PyTorch: transformers'
`LlamaForCausalLM` for each model, each with its own `past_key_values`, combined in a Python loop.
Everything that compares ours with torch alternates ours / torch repeat by repeat in this one process
(the machine is small and shared), and reports medians and ranges from the same run.

- steady state (EOS off, so every rollout decodes exactly n tokens; prompts: `make_prompts`, chat-templated
  and cut to one length, no padding): per-token time = (median rollout of n new tokens - median rollout of
  1 new token) / (n - 1), the same for both sides, so the prefill, the first step and the call overheads
  cancel; tok/s = batch / per-token time. Greedy tokens of the n-token rollouts are compared.
- bounds, measured in the same repeat loop: a jitted chain of `x @ W` over the models' own projection
  matrices (every q/k/v/o/gate/up/down kernel of the base and the ARM, one array each, and each model's
  tied head `x @ E.T` once), each input depending on the previous output (so nothing is hoisted or
  overlapped). At batch 1 it gives the bandwidth XLA reaches streaming those weights (bytes / time); the
  weight-streaming bound is bandwidth / bytes a decode step must read (both models' weights + the whole
  allocated KV cache, which ours reads at every step). At batch > 1 the chain's time is the
  projection-matmul bound: batch / chain time (attention and the cache not counted). Because one XLA
  matvec at a time does not reach the machine's bandwidth (the rollout runs independent ones side by
  side and can beat the chain), the "best" bounds use the fastest of: that chain, the same chain in torch
  on torch's own weights (`F.linear`), and (bandwidth only) a jitted sum over the same arrays.
- whole process: `uniarm sample` (import, load, compile or load compiled programs, decode, write) on 16
  prompts of their natural lengths (left-padded), at most 64 new tokens, EOS on, against a fresh PyTorch
  process doing the same job (`--_torch_process`: `torch_generate_padded`); JAX's persistent compilation
  cache is a temp dir, warmed by one cold run of ours (reported apart); then ours / torch alternate.
- load: `uniarm_jax.load_pretrained` (arrays blocked on) vs `LlamaForCausalLM.from_pretrained`, alternated.
- memory: peak RSS of the whole-process runs beside fresh import-only probes of each stack.
- torch's OpenMP wait policy is timed first (`common.choose_omp_policy`): on this shared 2-core machine libgomp's
  spinning threads can make torch 20x slower; the faster of the default and PASSIVE is used.

--gpu: a Llama-7B-shaped base and a Llama-7B-shaped MoSLoRA ARM (its own random bf16 weights, made on the
device, no files), batch 1 and 16, prompt 128: decode-step time = (rollout of N new tokens - rollout of 1
new token) / (N - 1), against the HBM bound (bytes read per step / bandwidth).

    PYTHONPATH=. .venv/bin/python bench/decode.py [--batches 1,16 --prompt-len 32 --new-tokens 64 --repeats 3]
    PYTHONPATH=. python bench/decode.py --gpu [--batches 1,16 --prompt-len 128 --new-tokens 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from common import (  # bench/ is this script's sys.path[0]
    choose_omp_policy,
    clock,
    memory_mib,
    run_fresh,
    run_measured,
    set_omp_policy,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBES = ("jax-import", "torch-import")
ACFG = dict(kind="moslora", rank=8, num_objectives=2)  # --gpu: targets q,k,v (the default); dropout off
PROJECTIONS = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
               ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"))
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


def ours_generate(base, guides, prompts, n: int, *, pref=None, arm_weights=None):
    """Greedy guided decoding, `[batch, n]` token ids (exactly n steps: EOS is off)."""
    import numpy as np

    from uniarm_jax.decode import Sampler, guided_generate
    tokens, steps = guided_generate(base, guides, prompts, n, pref=pref, arm_weights=arm_weights, sampler=Sampler(0.0))
    assert steps == n, (steps, n)
    return np.asarray(tokens)


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


# ------------------------------------------------------------------------ CPU: the PyTorch process

def encode_like_ours(tokenizer, prompt: str) -> list[int]:
    """A prompt as `uniarm sample` encodes it (`data.tokenization.encode_prompt`, chat template), written
    out here so that the torch process imports no JAX: the chat template's text tokenised without special
    tokens, BOS once in front (the benchmark's prompts are far below the 512-token limit)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    ids, bos = list(tokenizer(text, add_special_tokens=False)["input_ids"]), tokenizer.bos_token_id
    if bos is None:
        return ids
    while ids and ids[0] == bos:
        ids = ids[1:]
    return [bos] + ids


def torch_generate_padded(base, arm, prompts: list[list[int]], n: int, w: float, eos_ids, pad_id: int):
    """The loop of `torch_generate` on left-padded prompts of different lengths, as `uniarm sample` runs
    them: attention mask, positions counted over real tokens (cumsum(mask) - 1, then +1 a step), a row
    that emitted EOS gets pad tokens, and the loop ends when every row is done or after n tokens.
    Returns each row's tokens up to and including EOS, and the number of steps."""
    import torch
    b, length = len(prompts), max(len(p) for p in prompts)
    with torch.inference_mode():
        ids = torch.full((b, length), pad_id, dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, length - len(p):] = torch.tensor(p)
            mask[row, length - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ob = base(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        oa = arm(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        nxt, eos = mask.sum(-1, keepdim=True), torch.tensor(list(eos_ids))
        done, out = torch.zeros(b, dtype=torch.bool), []
        for i in range(n):
            logp = torch.log_softmax(ob.logits[:, -1].float(), -1) + w * torch.log_softmax(oa.logits[:, -1].float(), -1)
            tok = torch.where(done, pad_id, logp.argmax(-1))
            out.append(tok)
            done |= torch.isin(tok, eos)
            if i + 1 == n or bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long)], 1)
            ob = base(input_ids=tok[:, None], attention_mask=mask, position_ids=nxt,
                      past_key_values=ob.past_key_values, use_cache=True)
            oa = arm(input_ids=tok[:, None], attention_mask=mask, position_ids=nxt,
                     past_key_values=oa.past_key_values, use_cache=True)
            nxt = nxt + 1
        rows = torch.stack(out, 1).tolist()
    eos_set = set(eos_ids)
    return [row[:next((i + 1 for i, t in enumerate(row) if t in eos_set), len(row))] for row in rows], len(out)


def _torch_process(a) -> None:
    """The whole PyTorch job of `uniarm sample`, in a fresh process: import, load both models and the
    tokenizer, encode the prompts, generate (batches of --process-batch), write the same JSON lines;
    prints the seconds of each phase."""
    t0 = time.perf_counter()
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM
    t1 = time.perf_counter()
    base = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32).eval()
    arm = LlamaForCausalLM.from_pretrained(a.arm_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(a.model_dir)
    t2 = time.perf_counter()
    with open(a.prompts) as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    encoded = [encode_like_ours(tokenizer, p) for p in prompts]
    eos = base.config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t3 = time.perf_counter()
    tokens, steps = [], []
    for start in range(0, len(encoded), a.process_batch):
        rows, s = torch_generate_padded(base, arm, encoded[start:start + a.process_batch], a.new_tokens,
                                        a.arm_weight, eos, pad)
        tokens += rows
        steps.append(s)
    t4 = time.perf_counter()
    with open(a.out, "w") as f:
        for prompt, ids, toks in zip(prompts, encoded, tokens):
            f.write(json.dumps({"prompt": prompt, "pref": None, "prompt_token_ids": ids, "token_ids": toks,
                                "text": tokenizer.decode(toks, skip_special_tokens=True)}) + "\n")
    t5 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "encode_s": t3 - t2, "generate_s": t4 - t3,
                      "write_s": t5 - t4, "steps": steps, "torch_threads": torch.get_num_threads()}))


# ------------------------------------------------------------------------------------------------ CPU

def _omp_check(a) -> None:
    """In a fresh subprocess (its OMP_WAIT_POLICY set by the caller): torch's rollouts of 4 tokens at
    batch 1 and 16, one untimed, then up to 3 timed (fewer past 8 s); print the seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM
    base = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32).eval()
    arm = LlamaForCausalLM.from_pretrained(a.arm_dir, dtype=torch.float32).eval()
    prompts = make_prompts(AutoTokenizer.from_pretrained(a.model_dir), 16, a.prompt_len)
    job = lambda: [torch_generate(base, arm, prompts[:b], 4, a.arm_weight) for b in (1, 16)]  # noqa: E731
    job()
    times, start = [], time.perf_counter()
    while len(times) < 3 and time.perf_counter() - start < 8:
        times.append(clock(job)[1])
    print(json.dumps({"seconds": [round(t, 3) for t in times], "torch_threads": torch.get_num_threads()}))


def torch_policy(a, arm_dir: str) -> dict:
    """`common.choose_omp_policy` timed on torch's rollouts (`_omp_check`)."""
    return choose_omp_policy([sys.executable, os.path.abspath(__file__), "--_omp_check", f"--model-dir={a.model_dir}",
                              f"--arm-dir={arm_dir}", f"--arm-weight={a.arm_weight}", f"--prompt-len={a.prompt_len}"],
                             a.torch_omp_wait_policy)


def _probe(kind: str) -> None:
    """In a fresh subprocess: import one stack as its whole-process job does; print the seconds and memory."""
    t = time.perf_counter()
    if kind == "jax-import":
        import jax
        import tokenizers  # noqa: F401  (load_tokenizer reads tokenizer.json with it)
        from transformers.utils.chat_template_utils import render_jinja_template  # noqa: F401

        import uniarm_jax.commands.main  # noqa: F401
        import uniarm_jax.decode  # noqa: F401
        jax.devices()
    else:
        import torch  # noqa: F401
        from transformers import AutoTokenizer, LlamaForCausalLM  # noqa: F401
    print(json.dumps({**memory_mib(), "import_s": round(time.perf_counter() - t, 3),
                      "torch_imported": "torch" in sys.modules}))


def projection_matrices(handle) -> list:
    """The model's own projection matrices as a decode step reads them, one array each: per layer
    q, k, v, o, gate, up, down (`[d_in, d_out]`), then the head (tied: the embedding `[vocab, d]`, used as
    `x @ E.T`)."""
    import jax
    layers, top = handle.params["layers"], handle.params
    out = [layers[group][name]["kernel"][i] for i in range(handle.config.num_hidden_layers)
           for group, name in PROJECTIONS]
    out.append(top["embed_tokens"]["embedding"] if handle.config.tie_word_embeddings else top["lm_head"]["kernel"])
    return jax.block_until_ready(out)


def make_chain(matrices: list, tied_heads: set, batch: int):
    """A jitted function that runs `x @ W` over `matrices` in order at `batch` rows (the heads in
    `tied_heads`, by index, as `x @ E.T`), each input offset by a scalar of the previous output."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def chain(ws, x0):
        s = jnp.zeros((), jnp.float32)
        for i, w in enumerate(ws):
            if i in tied_heads:
                y = (x0[:, :w.shape[1]] + s) @ w.T
            else:
                y = (x0[:, :w.shape[0]] + s) @ w
            s = 1e-6 * jnp.sum(y)
        return s
    width = max(max(w.shape) for i, w in enumerate(matrices) if i not in tied_heads)
    x0 = jnp.asarray(np.random.default_rng(0).standard_normal((batch, width)), jnp.float32)
    fn = jax.jit(chain)
    return lambda: jax.block_until_ready(fn(matrices, x0))


def make_read(matrices: list):
    """A jitted sum over every matrix (independent reductions in one program): the rate at which XLA
    reads those bytes with no arithmetic to speak of."""
    import jax
    import jax.numpy as jnp
    fn = jax.jit(lambda ws: sum(jnp.sum(w) for w in ws))
    return lambda: jax.block_until_ready(fn(matrices))


def make_torch_chain(models: list, batch: int):
    """The same chain in torch on torch's own weights: `F.linear` over every projection of each model,
    then its head."""
    import torch
    import torch.nn.functional as F
    weights = []
    for m in models:
        for layer in m.model.layers:
            a, f = layer.self_attn, layer.mlp
            weights += [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight, f.gate_proj.weight,
                        f.up_proj.weight, f.down_proj.weight]
        weights.append(m.lm_head.weight)
    x0 = torch.randn(batch, max(max(w.shape) for w in weights if w.shape[0] < 10000), generator=torch.Generator()
                     .manual_seed(0))

    def run():
        with torch.inference_mode():
            s = torch.zeros(())
            for w in weights:
                s = 1e-6 * F.linear(x0[:, :w.shape[1]] + s, w).sum()
            return float(s)
    return run


def load_ours(model_dir: str, arm_dir: str):
    """(base, arm) handles in float32 with EOS turned off on the base (every rollout runs exactly n steps)."""
    import uniarm_jax
    base = uniarm_jax.load_pretrained(model_dir, dtype="float32")
    base = dataclasses.replace(base, config=base.config.replace(eos_token_id=None))
    return base, uniarm_jax.load_pretrained(arm_dir, dtype="float32")


def load_torch(model_dir: str, arm_dir: str):
    import torch
    from transformers import LlamaForCausalLM
    base = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    arm = LlamaForCausalLM.from_pretrained(arm_dir, dtype=torch.float32).eval()
    return base, arm


def _med_range(xs, scale=1.0, digits=4) -> dict:
    return {"median": round(statistics.median(xs) * scale, digits),
            "min_max": [round(min(xs) * scale, digits), round(max(xs) * scale, digits)]}


def time_loads(a) -> dict:
    """Seconds of loading the base checkpoint, ours (arrays blocked on) and torch alternating. transformers
    maps the safetensors file and reads a weight when it is first used, so torch is also timed up to
    every weight read once (a sum over each)."""
    import gc

    import jax
    import torch
    from transformers import LlamaForCausalLM

    import uniarm_jax

    def torch_load():
        t = time.perf_counter()
        model = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
        loaded = time.perf_counter() - t
        with torch.no_grad():
            for x in model.parameters():
                x.sum()
        return loaded, time.perf_counter() - t
    ours, ref, ref_read = [], [], []
    for _ in range(a.load_repeats):
        ours.append(clock(lambda: jax.block_until_ready(uniarm_jax.load_pretrained(a.model_dir, "float32").params))[1])
        gc.collect()
        loaded, read = torch_load()
        ref.append(loaded)
        ref_read.append(read)
        gc.collect()
    files = [f for f in os.listdir(a.model_dir) if f.endswith(".safetensors")]
    return {"ours_s": _med_range(ours, digits=3), "torch_s": _med_range(ref, digits=3),
            "torch_then_every_weight_read_s": _med_range(ref_read, digits=3),
            "ratio_torch_over_ours": round(statistics.median(ref) / statistics.median(ours), 3),
            "checkpoint_mb": round(sum(os.path.getsize(os.path.join(a.model_dir, f)) for f in files) / 1e6, 1),
            "what": "base checkpoint (safetensors, float32, in the page cache after the first load), "
                    f"median of {a.load_repeats}, alternating; ours: load_pretrained + block_until_ready; torch: "
                    "LlamaForCausalLM.from_pretrained (lazy: the file is mapped), then + a sum over every weight"}


def steady_state(a, base, arm, tbase, tarm, prompts, chains: dict, kv_bytes) -> dict:
    """Per batch: rollouts of n and 1 new tokens, ours and torch, and the bound chains, alternating."""
    from uniarm_jax.decode.rollout import _rollout

    n, w, out = a.new_tokens, a.arm_weight, {}
    for b in a.batches:
        rows = prompts[:b]
        runs = {"ours_n": lambda: ours_generate(base, [arm], rows, n, arm_weights=[w]),
                "torch_n": lambda: torch_generate(tbase, tarm, rows, n, w),
                "ours_1": lambda: ours_generate(base, [arm], rows, 1, arm_weights=[w]),
                "torch_1": lambda: torch_generate(tbase, tarm, rows, 1, w),
                "chain_jax": chains["jax"][b], "chain_torch": chains["torch"][b], "read_sum": chains["read"]}
        first = {k: clock(fn)[1] for k, fn in runs.items()}  # ours: trace + compile + run
        cache_after_warmup = _rollout._cache_size()
        times, cpu, tokens = {k: [] for k in runs}, {k: [] for k in runs}, {}
        for _ in range(a.repeats):
            for k, fn in runs.items():
                tokens[k], t, c = clock(fn)
                times[k].append(t)
                cpu[k].append(c)
        med = {k: statistics.median(v) for k, v in times.items()}
        step = {s: (med[f"{s}_n"] - med[f"{s}_1"]) / (n - 1) for s in ("ours", "torch")}
        tps = {s: b / step[s] for s in step}

        def pairwise(side):  # each repeat's own (rollout(n) - rollout(1)) / (n - 1), ms
            d = [(x - y) / (n - 1) * 1e3 for x, y in zip(times[f"{side}_n"], times[f"{side}_1"])]
            return [round(min(d), 3), round(max(d), 3)]
        weights_bytes, kv_read, kv_written = chains["weights_bytes"] + chains["embedding_row_bytes"] * b, \
            kv_bytes(b, chains["slots"]), kv_bytes(b, 1)
        samples = chains["bandwidth_samples"]  # batch 1's chains (the read is the same at any batch)
        for k in samples if b == 1 else ("read_sum",):
            samples[k] += times[k]
        bw = {k: chains["bytes"] / statistics.median(v) for k, v in samples.items()}
        per_step = weights_bytes + kv_read
        streaming_bound, best_streaming_bound = b * bw["chain_jax"] / per_step, b * max(bw.values()) / per_step
        matmul_bound, best_matmul_bound = b / med["chain_jax"], b / min(med["chain_jax"], med["chain_torch"])
        out[f"batch_{b}"] = {
            "tokens_per_s": {"ours": round(tps["ours"], 1), "torch": round(tps["torch"], 1),
                             "ratio_ours_over_torch": round(tps["ours"] / tps["torch"], 3)},
            "per_token_ms": {"ours": round(step["ours"] * 1e3, 3), "torch": round(step["torch"] * 1e3, 3),
                             "ours_pairwise_min_max": pairwise("ours"), "torch_pairwise_min_max": pairwise("torch")},
            "rollout_s": {k: _med_range(v) for k, v in times.items() if not k.startswith("chain")},
            "cpu_per_wall": {k: round(sum(cpu[k]) / sum(times[k]), 2) for k in runs},
            "first_call_s": {k: round(v, 3) for k, v in first.items()},
            "greedy_agreement_ours_vs_torch": agreement(tokens["ours_n"], tokens["torch_n"]),
            "recompiled_during_repeats": _rollout._cache_size() != cache_after_warmup,
            "bounds": {
                "chain_s": {"jax": _med_range(times["chain_jax"], digits=5),
                            "torch_cross_check": _med_range(times["chain_torch"], digits=5)},
                "chain_gb_per_s": {"jax": round(chains["bytes"] / med["chain_jax"] / 1e9, 2),
                                   "torch_cross_check": round(chains["bytes"] / med["chain_torch"] / 1e9, 2)},
                "chain_gflop_per_s": {
                    "jax": round(2 * b * chains["params"] / med["chain_jax"] / 1e9, 2),
                    "torch_cross_check": round(2 * b * chains["params"] / med["chain_torch"] / 1e9, 2)},
                "bytes_per_token_step": {"weights_both_models": weights_bytes, "kv_cache_read": kv_read,
                                         "total": per_step},
                "cache_traffic_per_step_bytes": {
                    "ours_read": kv_read, "ours_written": kv_written,
                    "torch_attention_read_mean": kv_bytes(b, chains["prompt_len"] + 1 + n / 2),
                    "torch_cat_copy_read_and_written_each_mean": kv_bytes(b, chains["prompt_len"] + 1 + n / 2)},
                "read_sum_s": _med_range(times["read_sum"], digits=5),
                "bandwidth_gb_per_s_batch_1": {k: round(v / 1e9, 2) for k, v in bw.items()},
                "weight_streaming": {"bandwidth_gb_per_s": round(bw["chain_jax"] / 1e9, 2),
                                     "bound_tokens_per_s": round(streaming_bound, 1),
                                     "fraction_ours": round(tps["ours"] / streaming_bound, 3),
                                     "fraction_torch": round(tps["torch"] / streaming_bound, 3),
                                     "best_bandwidth_gb_per_s": round(max(bw.values()) / 1e9, 2),
                                     "best_bound_tokens_per_s": round(best_streaming_bound, 1),
                                     "fraction_of_best_ours": round(tps["ours"] / best_streaming_bound, 3),
                                     "fraction_of_best_torch": round(tps["torch"] / best_streaming_bound, 3)},
                "projection_matmul": {"bound_tokens_per_s": round(matmul_bound, 1),
                                      "fraction_ours": round(tps["ours"] / matmul_bound, 3),
                                      "fraction_torch": round(tps["torch"] / matmul_bound, 3),
                                      "best_bound_tokens_per_s": round(best_matmul_bound, 1),
                                      "fraction_of_best_ours": round(tps["ours"] / best_matmul_bound, 3),
                                      "fraction_of_best_torch": round(tps["torch"] / best_matmul_bound, 3)},
            },
        }
    return out


def whole_process(a, tmp: str, user_env: dict) -> dict:
    """`uniarm sample` vs the same job in a fresh PyTorch process, each a fresh process, alternating after
    one cold-cache run of ours."""
    prompts_file, cache = os.path.join(tmp, "prompts.jsonl"), os.path.join(tmp, "compiled")
    with open(prompts_file, "w") as f:
        for i in range(a.process_prompts):
            f.write(json.dumps({"prompt": QUESTIONS[i % len(QUESTIONS)]}) + "\n")
    envs = {"ours": dict(user_env, UNIARM_COMPILE_CACHE=cache, PYTHONPATH=REPO),  # as a user runs it
            "torch": dict(os.environ, PYTHONPATH=REPO)}  # with the OpenMP policy chosen
    limit = ["--max-new-tokens", str(a.process_new_tokens)]
    ours_cmd = lambda out: [sys.executable, "-m", "uniarm_jax.commands.main", "sample", "--no-progress",  # noqa: E731
                            "--base", a.model_dir, "--arm", a.arm_dir, "--arm-weight", str(a.arm_weight),
                            "--prompts", prompts_file, "--out", out, *limit, "--batch-size", str(a.process_batch)]
    torch_cmd = lambda out: [sys.executable, os.path.abspath(__file__), "--_torch_process",  # noqa: E731
                             f"--model-dir={a.model_dir}", f"--arm-dir={a.arm_dir}", f"--arm-weight={a.arm_weight}",
                             f"--prompts={prompts_file}", f"--out={out}", f"--new-tokens={a.process_new_tokens}",
                             f"--process-batch={a.process_batch}"]
    logline = re.compile(r"(\d+) responses to .*: (\d+) tokens in ([\d.]+) s, .*\(([\d.]+) s of it\)")

    def run(side: str, out: str) -> dict:
        r = run_measured(ours_cmd(out) if side == "ours" else torch_cmd(out), env=envs[side], cwd=REPO)
        if r["rc"] != 0:
            raise RuntimeError(f"{side} process failed ({r['rc']}): {r['stderr'][-2000:]}")
        res = {"wall_s": round(r["wall_s"], 3), "peak_rss_mib": round(r["peak_mib"], 1)}
        if side == "ours":
            m = logline.search(r["stdout"])
            if m:
                res.update(generate_s=float(m[3]), compile_or_cache_load_s=float(m[4]), tokens=int(m[2]))
        else:
            res.update({k: round(v, 3) if isinstance(v, float) else v
                        for k, v in json.loads(r["stdout"].strip().splitlines()[-1]).items()})
        return res

    cold = run("ours", os.path.join(tmp, "ours_cold.jsonl"))
    runs = {"ours": [], "torch": []}
    for i in range(a.process_repeats):
        for side in runs:
            runs[side].append(run(side, os.path.join(tmp, f"{side}_{i}.jsonl")))

    def read(path):
        with open(path) as f:
            return [json.loads(line) for line in f]
    ours_rows, torch_rows, cold_rows = (read(os.path.join(tmp, name)) for name in
                                        ("ours_0.jsonl", "torch_0.jsonl", "ours_cold.jsonl"))
    same = lambda key: sum(x[key] == y[key] for x, y in zip(ours_rows, torch_rows))  # noqa: E731
    med = {s: statistics.median(r["wall_s"] for r in v) for s, v in runs.items()}
    return {
        "wall_s": {s: _med_range([r["wall_s"] for r in v], digits=3) for s, v in runs.items()},
        "ours_cold_cache_wall_s": cold["wall_s"],
        "ratio_torch_over_ours": round(med["torch"] / med["ours"], 3),
        "ratio_torch_over_ours_cold_cache": round(med["torch"] / cold["wall_s"], 3),
        "runs": {"ours_cold_cache": cold, **runs},
        "outputs": {"rows": len(ours_rows), "prompt_token_ids_identical": same("prompt_token_ids"),
                    "token_ids_identical": same("token_ids"), "text_identical": same("text"),
                    "ours_cold_equals_warm": sum(x["token_ids"] == y["token_ids"]
                                                 for x, y in zip(cold_rows, ours_rows)),
                    "prompt_lengths": sorted({len(r["prompt_token_ids"]) for r in ours_rows}),
                    "response_lengths_ours": [len(r["token_ids"]) for r in ours_rows],
                    "response_lengths_torch": [len(r["token_ids"]) for r in torch_rows]},
        "what": f"{a.process_prompts} prompts (chat template, natural lengths, left-padded), "
                f"{a.process_new_tokens} new tokens max, batch {a.process_batch}, EOS on (a row that is done "
                "emits pad; the loop ends when all rows are done), greedy, arm weight "
                f"{a.arm_weight}; wall_s from process start to exit; ours' generate_s and "
                "compile_or_cache_load_s are its own log line's",
    }


def make_arm(a, out_dir: str) -> None:
    """The ARM directory, in a fresh process (this one must not import torch before its OpenMP policy is
    set, and transformers, which the tokenizer needs, imports torch)."""
    code = ("import sys, uniarm_jax; from uniarm_jax.model.handle import truncate_layers; "
            "uniarm_jax.save_pretrained(truncate_layers(uniarm_jax.load_pretrained(sys.argv[1], 'float32'), "
            "int(sys.argv[2]), 0), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, a.model_dir, str(a.arm_layers), out_dir], check=True,
                   env=dict(os.environ, PYTHONPATH=REPO))


def cpu_main(a) -> dict:
    t_start, load_start, user_env = time.perf_counter(), os.getloadavg(), dict(os.environ)
    log = lambda m: print(f"[{time.perf_counter() - t_start:6.1f}s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    tmp = tempfile.TemporaryDirectory(prefix="decode_bench_")
    a.arm_dir = os.path.join(tmp.name, "arm")
    make_arm(a, a.arm_dir)
    log("ARM written; choosing torch's OpenMP wait policy")
    omp = torch_policy(a, a.arm_dir)
    set_omp_policy(omp["used"])
    log(f"OMP_WAIT_POLICY: {omp['used']} {omp.get('check_s', '')}")

    import jax
    import numpy as np
    import torch
    import transformers

    import uniarm_jax
    from uniarm_jax.decode.rollout import _rollout
    from uniarm_jax.decode.slots import BUCKET

    base, arm = load_ours(a.model_dir, a.arm_dir)
    tbase, tarm = load_torch(a.model_dir, a.arm_dir)
    tokenizer = uniarm_jax.load_tokenizer(a.model_dir)
    prompts = make_prompts(tokenizer, max(a.batches), a.prompt_len)
    log("models loaded; timing loads")
    loads = time_loads(a)

    # the bound chains over both models' own matrices, at every batch (and at batch 1 for the bandwidth)
    mats_b, mats_a = projection_matrices(base), projection_matrices(arm)
    matrices = mats_b + mats_a
    heads = {len(mats_b) - 1, len(matrices) - 1}
    n_params = int(sum(m.size for m in matrices))
    nbytes = lambda tree: int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))  # noqa: E731
    norms = sum(nbytes(h.params[k]) for h in (base, arm) for k in ("norm",)) + sum(
        nbytes(h.params["layers"][k]) for h in (base, arm) for k in ("input_layernorm", "post_attention_layernorm"))
    cfg = base.config
    bucket = a.bucket or BUCKET
    slots = -(-a.prompt_len // bucket) * bucket + a.new_tokens
    layers = cfg.num_hidden_layers + arm.config.num_hidden_layers

    def kv_bytes(b, length):  # k and v, every layer of both models, float32
        return int(2 * layers * b * length * cfg.num_key_value_heads * cfg.head_dim * 4)

    chains = {"jax": {b: make_chain(matrices, heads, b) for b in sorted({1, *a.batches})},
              "torch": {b: make_torch_chain([tbase, tarm], b) for b in sorted({1, *a.batches})},
              "bytes": n_params * 4, "params": n_params, "weights_bytes": n_params * 4 + norms,
              "embedding_row_bytes": 2 * cfg.hidden_size * 4, "slots": slots, "prompt_len": a.prompt_len,
              "read": make_read(matrices), "bandwidth_samples": {"chain_jax": [], "chain_torch": [], "read_sum": []}}
    if 1 not in a.batches:  # the bandwidth comes from the batch-1 chains
        fns = {"chain_jax": chains["jax"][1], "chain_torch": chains["torch"][1], "read_sum": chains["read"]}
        for fn in fns.values():
            fn()
        for _ in range(max(3, a.repeats)):
            for k, fn in fns.items():
                chains["bandwidth_samples"][k].append(clock(fn)[1])
    log("steady state")
    steady = steady_state(a, base, arm, tbase, tarm, prompts, chains, kv_bytes)
    compiled = _rollout._cache_size()
    del tbase, tarm, chains, matrices, mats_a, mats_b

    log("whole processes")
    mem = {k: run_fresh([sys.executable, os.path.abspath(__file__), "--_probe", k]) for k in PROBES}
    proc = whole_process(a, tmp.name, user_env)
    tmp.cleanup()
    med = statistics.median
    ours_runs, torch_runs = proc["runs"]["ours"], proc["runs"]["torch"]
    if all("generate_s" in r for r in ours_runs):
        gen, comp = med(r["generate_s"] for r in ours_runs), med(r["compile_or_cache_load_s"] for r in ours_runs)
        proc["breakdown_s_medians"] = {
            "ours": {"import_fresh_probe": mem["jax-import"]["import_s"], "generate": gen,
                     "of_which_compile_or_cache_load": comp,
                     "rest_load_encode_write_exit": round(proc["wall_s"]["ours"]["median"] - gen
                                                          - mem["jax-import"]["import_s"], 3)},
            "torch": {**{k: round(med(r[k] for r in torch_runs), 3) for k in
                         ("import_s", "load_s", "encode_s", "generate_s", "write_s")},
                      "rest_interpreter_start_exit": round(med(r["wall_s"] - sum(r[k] for k in (
                          "import_s", "load_s", "encode_s", "generate_s", "write_s")) for r in torch_runs), 3)},
            "what": "ours: generate = its log line's seconds in generate_in_chunks (per-layer weight layout, "
                    "trace, lowering, compile or persistent-cache load, run); torch: its own phase clocks"}

    def peak(side, lib):
        p = max(r["peak_rss_mib"] for r in proc["runs"][side])
        return {"import_baseline": mem[f"{lib}-import"]["peak"], "peak_whole_process": p,
                "increment": round(p - mem[f"{lib}-import"]["peak"], 1),
                "import_s_fresh_process": mem[f"{lib}-import"]["import_s"],
                "torch_imported": mem[f"{lib}-import"]["torch_imported"]}

    def fraction(b):
        kind = "weight_streaming" if b == 1 else "projection_matmul"
        r = steady[f"batch_{b}"]["bounds"][kind]
        return {"bound": kind, "bound_tokens_per_s": r["bound_tokens_per_s"], "ours": r["fraction_ours"],
                "torch": r["fraction_torch"], "goal": 0.8 if b == 1 else 0.7,
                "best_bound_tokens_per_s": r["best_bound_tokens_per_s"], "ours_of_best": r["fraction_of_best_ours"],
                "torch_of_best": r["fraction_of_best_torch"]}
    summary = {
        **{f"batch_{b}": {**steady[f"batch_{b}"]["tokens_per_s"],
                          "greedy_rows_identical": steady[f"batch_{b}"]["greedy_agreement_ours_vs_torch"][
                              "rows_identical"],
                          "fraction_of_bound": fraction(b)} for b in a.batches},
        "whole_process_s": {"ours": proc["wall_s"]["ours"]["median"], "torch": proc["wall_s"]["torch"]["median"],
                            "ratio_torch_over_ours": proc["ratio_torch_over_ours"], "goal": 2.0,
                            "ours_cold_compile_cache": proc["ours_cold_cache_wall_s"],
                            "rows_text_identical": f"{proc['outputs']['text_identical']}/{proc['outputs']['rows']}"},
        "load_s": {"ours": loads["ours_s"]["median"], "torch": loads["torch_s"]["median"],
                   "checkpoint_mb": loads["checkpoint_mb"]},
    }
    return {
        "summary": summary,
        "meta": {"mode": "cpu", "jax": jax.__version__, "numpy": np.__version__, "torch": torch.__version__,
                 "transformers": transformers.__version__, "device_kind": jax.devices()[0].device_kind,
                 "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "model_dir": a.model_dir,
                 "torch_omp_wait_policy": omp,
                 "loadavg_1_5_15_start_end": [list(load_start), list(os.getloadavg())],
                 "setting": f"base SmolLM2-135M-Instruct ({cfg.num_hidden_layers} layers) + ARM = its first "
                            f"{a.arm_layers} layers (truncate_layers, embedding/norm/tied head kept) saved as a plain "
                            f"HF directory and loaded as a separate model; log_softmax(base) + {a.arm_weight} * "
                            "log_softmax(arm), greedy, float32",
                 "batches": a.batches, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "repeats": a.repeats,
                 "allocated_cache_slots": slots, "params_in_chain": n_params,
                 "wall_s": round(time.perf_counter() - t_start, 1), "rollout_compilations": compiled,
                 "ours": "uniarm_jax.decode.guided_generate(base, [arm], prompts, n, arm_weights=[w]) with EOS off "
                         "(base.config.eos_token_id=None), Sampler(0.0); one compiled while-loop rollout",
                 "reference": "transformers LlamaForCausalLM base + ARM, own past_key_values each (DynamicCache), "
                              "python loop, log_softmax(base)+w*log_softmax(arm), greedy, logits_to_keep=1 on the "
                              "prompt, never stops; n-1 decode forwards per model, as ours",
                 "steady_state_method": "per_token = (median rollout(n) - median rollout(1)) / (n-1) per side, "
                                        "repeats alternating ours_n, torch_n, ours_1, torch_1, chain_jax, "
                                        "chain_torch, read_sum; tokens_per_s = batch / per_token; pairwise "
                                        "min/max use each repeat's own difference",
                 "bounds_method": "chain = one jitted function of x @ W over every projection kernel of both models "
                                  "(own arrays, model shapes) + each model's tied head x @ E.T, each input + "
                                  "1e-6*sum(previous output); weight_streaming: bandwidth = chain bytes / batch-1 "
                                  "chain time, bound = batch * bandwidth / (weights of both models read per step "
                                  "[kernels, heads, norms, batch embedding rows] + KV cache read per step [2 x "
                                  "layers of both x batch x allocated slots (prompt bucketed + n) x kv_heads x "
                                  "head_dim x 4 B]); projection_matmul: bound = batch / chain time at that batch "
                                  "(attention, cache, norms not counted); fraction = measured tok/s / bound; "
                                  "torch_cross_check = the same chain in torch eager on torch's own weights "
                                  "(F.linear); read_sum = a jitted sum over the same arrays; best_* bounds take the "
                                  "highest bandwidth of chain_jax, chain_torch, read_sum at batch 1 and the faster "
                                  "chain at batch b; the torch cache figures are estimates (mean attended length)"},
        "steady_state": steady,
        "whole_process": proc,
        "load": loads,
        "peak_memory_mib": {"ours": peak("ours", "jax"), "torch": peak("torch", "torch"),
                            "what": "peak RSS of the whole-process runs (load base + ARM, decode, write) beside a "
                                    "fresh process that only imported the same stack"},
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
            full = lambda: ours_generate(base, [arm], prompts, n, pref=pref)  # noqa: E731
            short = lambda: ours_generate(base, [arm], prompts, 1, pref=pref)  # noqa: E731
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
    p.add_argument("--new-tokens", type=int, default=64, help="generated tokens per steady-state rollout")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default: CPU 3, GPU 5)")
    p.add_argument("--arm-layers", type=int, default=6, help="CPU: the ARM is the base's first this many layers")
    p.add_argument("--arm-weight", type=float, default=0.5, help="CPU: the ARM's weight w")
    p.add_argument("--bucket", type=int, default=None, help="CPU: ours' prompt-length bucket, for the cache "
                   "bytes (default: uniarm_jax.decode.slots.BUCKET)")
    p.add_argument("--process-prompts", type=int, default=16, help="CPU: prompts in the whole-process job")
    p.add_argument("--process-new-tokens", type=int, default=64, help="CPU: max new tokens in the whole-process job")
    p.add_argument("--process-batch", type=int, default=16, help="CPU: batch size in the whole-process job")
    p.add_argument("--process-repeats", type=int, default=2, help="CPU: timed whole-process runs per side")
    p.add_argument("--load-repeats", type=int, default=3, help="CPU: timed checkpoint loads per side")
    p.add_argument("--torch-omp-wait-policy", choices=("auto", "default", "PASSIVE", "ACTIVE"), default="auto",
                   help="CPU: OMP_WAIT_POLICY for torch (auto: the faster of default and PASSIVE, timed first)")
    p.add_argument("--_probe", choices=PROBES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_omp_check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_torch_process", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arm-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prompts", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._probe:
        return _probe(a._probe)
    if a._torch_process:
        return _torch_process(a)
    a.prompt_len = a.prompt_len or (128 if a.gpu else 32)
    if a._omp_check:
        return _omp_check(a)
    a.batches = sorted(int(x) for x in a.batches.split(","))  # batch 1 first: its chain gives the bandwidth
    a.repeats = a.repeats or (5 if a.gpu else 3)
    if a.new_tokens < 2:
        p.error("--new-tokens must be at least 2 (the per-token time is a difference of n and 1 tokens)")
    if a.gpu:
        return print(json.dumps(gpu_main(a), indent=2))
    if a.model_dir is None:
        from uniarm_jax.hf.smollm2 import prepare_smollm2
        a.model_dir = prepare_smollm2(log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(cpu_main(a), indent=2))


if __name__ == "__main__":
    main()
