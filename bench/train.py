"""Train-step benchmark: uniarm_jax's ARM train step vs PyTorch + peft (CPU), and MFU on a GPU.

CPU (default): SmolLM2-135M-Instruct + LoRA (q,k,v, r=8, lora_alpha=16, dropout 0.05), GenARM's
Bradley-Terry loss on pairs (beta=0.5, summed response log-probs), AdamW with the same warm-up/cosine
schedule, weight decay and global-norm clipping, float32, the same batch of B pairs, each two sequences
of L tokens that share their first L/2 (the prompt). PyTorch runs both sequences, as the authors' code
does; ours packs each pair into one row (the prompt once) and runs the head on the responses only. As
in bench/forward.py: the two steps alternate repeat by repeat in one process, medians and the ratio
come from the same run, compilation (first call) is reported apart, and peak memory (ru_maxrss) of each
side's step loop is measured in a fresh subprocess beside an import-only baseline
(`--memory-lengths`: ours also at other L). Then GenARM, PARM (PBLoRA) and UniARM (MoSLoRA, dim_global:
k + 1 = 3 conditionings per pair) alternate on one k = 2 batch: seconds per pair and the ratio to
GenARM.

--gpu: a Llama-7B-shaped model with random bf16 weights made on the device (no files), remat on,
UniARM (dim_global, MoSLoRA r=8, k=2) and GenARM (LoRA r=8): step time, MFU and jax's cost analysis.

    PYTHONPATH=. .venv/bin/python bench/train.py [--batch 2 --length 64 --repeats 5]
    PYTHONPATH=. python bench/train.py --gpu [--batch 4 --length 512]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

from common import choose_omp_policy, clock, memory_increment, memory_mib, run_fresh, set_omp_policy, summary

PROBES = ("jax-import", "jax-train", "torch-import", "torch-train")
TARGETS = ("q_proj", "k_proj", "v_proj")
# dense bf16 peak FLOP/s by device kind substring (first match wins)
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12),
             ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12))


def make_batch(b: int, length: int, vocab: int, k: int = 1, seed: int = 0) -> dict:
    """B pairs of two sequences of `length` tokens without padding (so HF's default positions equal ours):
    a shared prompt (the first half) and two responses (the second half), packed one pair per row as
    data/batches.py does; `pairs` keeps the two sequences apart for the PyTorch side."""
    import numpy as np

    from uniarm_jax.data.batches import pack_pair
    rng = np.random.default_rng(seed)
    prompt_len = length // 2
    prompts = rng.integers(3, vocab, (b, prompt_len), dtype=np.int32)
    responses = rng.integers(3, vocab, (b, 2, length - prompt_len), dtype=np.int32)
    rows = [pack_pair(p, r, prompt_len + 2 * r.shape[1], r.shape[1], 0) for p, r in zip(prompts, responses)]
    batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
    batch.update(labels=rng.integers(0, 2, (b, k), dtype=np.int32), scores=np.full((b, 2, k), np.nan, np.float32))
    sequences = np.concatenate([np.repeat(prompts[:, None], 2, axis=1), responses], axis=-1)
    return batch, {"input_ids": sequences, "prompt_len": prompt_len}


def lr_at(step: int, a) -> float:
    """optax.warmup_cosine_decay_schedule(0, lr, warmup, total, 0) in plain Python (for torch)."""
    if step < a.warmup:
        return a.lr * step / a.warmup
    decay = max(a.total_steps, a.warmup + 1) - a.warmup
    return a.lr * 0.5 * (1 + math.cos(math.pi * min(step - a.warmup, decay) / decay))


# ------------------------------------------------------------------------------------ the two steps

# method -> the adapter it trains and k (UniARM: dim_global, k + 1 conditionings per pair)
METHODS = {"genarm": ("lora", 1), "parm": ("pblora", 2), "uniarm": ("moslora", 2)}


def load_smollm2(a):
    import jax

    import uniarm_jax
    from uniarm_jax.model.sharding import make_mesh
    return uniarm_jax.load_pretrained(a.model_dir, dtype="float32", mesh=make_mesh(devices=jax.devices()[:1]))


def ours_cpu(a, batch, method: str = "genarm", handle=None):
    """(step() -> loss, schedule): our jitted step on the real SmolLM2, state kept in the closure."""
    import jax

    from uniarm_jax.model.adapters import AdapterConfig
    from uniarm_jax.model.arm import init_adapter
    from uniarm_jax.train.losses import ObjectiveConfig
    from uniarm_jax.train.step import ArmSteps, init_state, make_optimizer

    handle = handle or load_smollm2(a)
    kind, k = METHODS[method]
    acfg = AdapterConfig(kind=kind, rank=a.rank, lora_alpha=2.0 * a.rank, targets=TARGETS, dropout=0.05,
                         num_objectives=max(k, 1))
    arm = init_adapter(handle, acfg)
    optimizer, schedule = make_optimizer(a.lr, a.warmup, a.total_steps, a.weight_decay, a.grad_clip)
    steps = ArmSteps(handle.config, acfg, ObjectiveConfig(method=method, betas=(a.beta,) * k, objective=0),
                     optimizer, handle.mesh)
    box = {"state": init_state(arm.adapter, optimizer), "rng": jax.random.key(0)}
    jbatch = jax.device_put(batch[0], steps.batch_sharding)

    def step():
        box["rng"], key = jax.random.split(box["rng"])
        box["state"], metrics = jax.block_until_ready(steps.train_step(box["state"], handle.params, jbatch, key))
        return float(metrics["loss"])
    return step, schedule


def per_method(a, handle) -> dict:
    """Step seconds per pair of each method on the same batch (k = 2 labels), alternating repeat by
    repeat, and each one's ratio to GenARM's."""
    batch = make_batch(a.batch, a.length, a.vocab, k=2, seed=1)
    runners = {m: ours_cpu(a, batch, m, handle)[0] for m in METHODS}
    times = {m: [] for m in METHODS}
    for step in runners.values():
        step()  # compile
    for _ in range(a.repeats):
        for m, step in runners.items():
            times[m].append(clock(step)[1] / a.batch)
    med = {m: statistics.median(t) for m, t in times.items()}
    return {m: {"step_s_per_pair": round(med[m], 4), "ratio_to_genarm": round(med[m] / med["genarm"], 3),
                "conditionings_per_pair": 3 if m == "uniarm" else 1} for m in METHODS}


def torch_cpu(a, batch):
    """step() -> loss: transformers + peft, the same loss, AdamW, schedule and clipping."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, target_modules=list(TARGETS),
                                             lora_dropout=0.05, bias="none", task_type="CAUSAL_LM")).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, a) / a.lr)
    batch, pairs = batch
    b, _, length = pairs["input_ids"].shape
    ids = torch.from_numpy(pairs["input_ids"].reshape(2 * b, length).astype("int64"))
    mask = torch.ones_like(ids)
    lmask = torch.zeros(2 * b, length - 1)
    lmask[:, pairs["prompt_len"] - 1:] = 1  # the response tokens, each scored by the logits before it
    labels = torch.from_numpy(batch["labels"][:, 0].astype("int64"))

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        lp = (logp * lmask).sum(-1).view(b, 2)
        diff = lp[:, 0] - lp[:, 1]
        loss = -F.logsigmoid(a.beta * torch.where(labels == 0, diff, -diff)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        sched.step()
        return float(loss.detach())
    return step


def _omp_check(a) -> None:
    """In a fresh subprocess (its OMP_WAIT_POLICY set by the caller): torch's train step, one untimed,
    then up to 3 timed (fewer past 8 s); print the seconds."""
    step = torch_cpu(a, make_batch(a.batch, a.length, a.vocab))
    step()
    times, start = [], time.perf_counter()
    while len(times) < 3 and time.perf_counter() - start < 8:
        times.append(clock(step)[1])
    print(json.dumps({"seconds": [round(t, 3) for t in times]}))


def _probe(kind: str, a) -> None:
    """In a fresh subprocess: import one stack, optionally run warm-up + `repeats` steps; print memory."""
    side = kind.split("-")[0]
    if side == "jax":
        import jax

        import uniarm_jax  # noqa: F401
        jax.devices()
    else:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    if kind.endswith("train"):
        batch = make_batch(a.batch, a.length, a.vocab)
        step = ours_cpu(a, batch)[0] if side == "jax" else torch_cpu(a, batch)
        for _ in range(a.repeats + 1):
            step()
    print(json.dumps(memory_mib()))


def _run_probe(kind: str, a, length: int | None = None) -> dict:
    args = [x for x in a.forward_args if not (length and x.startswith("--length="))]
    return run_fresh([sys.executable, os.path.abspath(__file__), "--_probe", kind] + args
                     + ([f"--length={length}"] if length else []))


def cpu_main(a) -> dict:
    omp = choose_omp_policy([sys.executable, os.path.abspath(__file__), "--_omp_check"] + a.forward_args,
                            a.torch_omp_wait_policy)
    set_omp_policy(omp["used"])  # before torch is imported here, and inherited by the probes
    import jax
    import peft
    import torch
    import transformers

    batch = make_batch(a.batch, a.length, a.vocab)
    handle = load_smollm2(a)
    ours, schedule = ours_cpu(a, batch, handle=handle)
    ref = torch_cpu(a, batch)
    tokens = 2 * a.batch * a.length

    # first calls: ours traces + compiles; B = 0 at init, so both start from the base model's loss
    (loss0_ours, first_ours, _), (loss0_torch, first_torch, _) = clock(ours), clock(ref)
    ours_t, torch_t = [], []
    for _ in range(a.repeats):
        ours_t.append(clock(ours)[1:])
        torch_t.append(clock(ref)[1:])
    s = summary(ours_t, torch_t, 1.0)
    methods = per_method(a, handle)
    mem = {k: _run_probe(k, a) for k in PROBES}

    def side(lib):
        return memory_increment(mem[f"{lib}-import"], mem[f"{lib}-train"], "train")

    by_length = {length: memory_increment(mem["jax-import"], _run_probe("jax-train", a, length), "train")["increment"]
                 for length in a.memory_lengths}

    return {
        "meta": {"mode": "cpu", "jax": jax.__version__, "torch": torch.__version__,
                 "transformers": transformers.__version__, "peft": peft.__version__,
                 "device_kind": jax.devices()[0].device_kind, "torch_threads": torch.get_num_threads(),
                 "cpu_count": os.cpu_count(), "model_dir": a.model_dir, "dtype": "float32",
                 "pairs": a.batch, "length": a.length, "tokens_per_step": tokens, "repeats": a.repeats,
                 "adapter": f"lora r={a.rank} alpha={2 * a.rank} dropout=0.05 on {','.join(TARGETS)}",
                 "objective": f"genarm bradley-terry beta={a.beta}",
                 "torch_omp_wait_policy": omp,
                 "optimizer": {"lr": a.lr, "warmup": a.warmup, "total_steps": a.total_steps,
                               "weight_decay": a.weight_decay, "grad_clip": a.grad_clip}},
        "sanity": {"first_step_loss_ours_torch": [loss0_ours, loss0_torch],
                   "lr_schedule_max_abs_diff": max(abs(float(schedule(i)) - lr_at(i, a)) for i in range(50))},
        "first_call_s": {"ours_trace_compile_run": round(first_ours, 3), "torch": round(first_torch, 3),
                         "ours_compile_estimate": round(first_ours - s["ours_median"], 3)},
        "step_s": s,
        "tokens_per_s": {"ours": round(tokens / s["ours_median"], 1), "torch": round(tokens / s["torch_median"], 1),
                         "ratio_ours_over_torch": round(s["torch_median"] / s["ours_median"], 3)},
        "peak_memory_mib": {"ours": side("jax"), "torch": side("torch"),
                            "ratio_increment_ours_over_torch": round(
                                side("jax")["increment"] / side("torch")["increment"], 3),
                            "ours_increment_by_length": by_length},
        "per_method_same_batch": methods,
    }


# --------------------------------------------------------------------------------------------- GPU

def gpu_main(a) -> dict:
    import jax
    import jax.numpy as jnp

    from uniarm_jax.model.adapters import AdapterConfig
    from uniarm_jax.model.arm import init_adapter
    from uniarm_jax.model.config import LlamaConfig
    from uniarm_jax.model.handle import ModelHandle
    from uniarm_jax.model.llama import Llama, count_params
    from uniarm_jax.model.sharding import make_mesh, param_shardings
    from uniarm_jax.train.losses import ObjectiveConfig
    from uniarm_jax.train.step import ArmSteps, init_state, make_optimizer

    dev = jax.devices()[0]
    h, f, n_layers, heads, vocab = ((4096, 11008, 32, 32, 32000) if a.model == "7b" else (256, 688, 2, 4, 512))
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=h, intermediate_size=f, num_hidden_layers=n_layers,
                      num_attention_heads=heads, num_key_value_heads=heads, head_dim=h // heads,
                      param_dtype="bfloat16", dtype="bfloat16", remat=True)
    mesh = make_mesh(devices=[dev])
    t0 = time.perf_counter()
    init = jax.jit(lambda key: Llama(cfg).init(key, jnp.zeros((1, 1), jnp.int32))["params"])
    params = jax.block_until_ready(jax.device_put(init(jax.random.key(0)),
                                                  param_shardings(mesh, jax.eval_shape(init, jax.random.key(0)),
                                                                 cfg.head_dim)))
    init_s = time.perf_counter() - t0
    n_params = count_params(params)
    n_matmul = n_params - vocab * h - (2 * n_layers + 1) * h  # minus the embedding lookup and the norms
    batch = make_batch(a.batch, a.length, vocab, k=2)[0]
    optimizer, _ = make_optimizer(1e-4, 10, 1000, 0.01, 1.0)
    peak = next((v for k, v in PEAK_BF16 if k in dev.device_kind), None) if a.peak_flops is None else a.peak_flops

    configs = {"genarm_lora": (AdapterConfig(kind="lora", rank=8, targets=TARGETS, dropout=0.05),
                               ObjectiveConfig(method="genarm", betas=(0.01, 0.01), objective=0), 1),
               "uniarm_moslora": (AdapterConfig(kind="moslora", rank=8, targets=TARGETS, dropout=0.05,
                                                num_objectives=2),
                                  ObjectiveConfig(method="uniarm", betas=(0.01, 0.01)), 3)}
    out, runners = {}, {}
    for name, (acfg, ocfg, copies) in configs.items():
        r = out[name] = {"adapter": f"{acfg.kind} r=8 on {','.join(TARGETS)}", "objective": ocfg.method,
                         "forward_rows": copies * a.batch}
        try:
            arm = init_adapter(ModelHandle(cfg, params, mesh), acfg)
            steps = ArmSteps(cfg, acfg, ocfg, optimizer, mesh)
            box = {"state": init_state(arm.adapter, optimizer)}
            jbatch = jax.device_put(batch, steps.batch_sharding)

            def step(steps=steps, box=box, jbatch=jbatch):
                box["state"], box["metrics"] = jax.block_until_ready(
                    steps.train_step(box["state"], params, jbatch, jax.random.key(1)))
            r["first_call_s"] = round(clock(step)[1], 3)
            step()
            r["loss"] = float(box["metrics"]["loss"])
            r["peak_gib_after_warmup"] = round(dev.memory_stats()["peak_bytes_in_use"] / 2**30, 2) \
                if dev.memory_stats() else None
            # jax's own count of the lowered step (nothing compiled or run). XLA's cost analysis counts a
            # while loop's body once, so the layer scan's forward and backward bodies count as one layer.
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                                    (box["state"], params, jbatch))
            lowered = jax.jit(steps.train_step).lower(*abstract, jax.random.key(1))
            cost, r["xla_cost_source"] = lowered.cost_analysis(), "lowered"
            if not cost:  # GPU backends answer only after compiling
                t = time.perf_counter()
                cost, r["xla_cost_source"] = lowered.compile().cost_analysis(), "compiled"
                r["aot_compile_s"] = round(time.perf_counter() - t, 2)
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            r["xla_cost_analysis_flops"] = float(cost["flops"]) if cost and "flops" in cost else None
            n_adapter = count_params(arm.adapter)
            # a packed row: the prompt (L/2) once, then both responses (L/2 each); the head scores the L
            # response tokens only
            row = a.length // 2 + 2 * (a.length - a.length // 2)
            tokens, scored = copies * a.batch * row, copies * a.batch * 2 * (a.length - a.length // 2)
            n_layer = (n_matmul - vocab * h) // n_layers
            attn = 12 * n_layers * h * row  # per token: QK^T and PV (4 h T) forward, twice that backward
            r["model_flops"] = tokens * (4 * n_layer * n_layers + attn + 6 * n_adapter) + scored * 4 * vocab * h
            r["hardware_flops_with_remat"] = r["model_flops"] + tokens * n_layers * (2 * n_layer + 4 * h * row)
            # the same count with one layer, forward 2N+4hT, recompute 2N+4hT, backward 2N+8hT (+ the head)
            r["expected_xla_flops_one_layer_body"] = (tokens * (6 * n_layer + 16 * h * row + 6 * n_adapter // n_layers)
                                                      + scored * 4 * vocab * h)
            r["adapter_params"] = n_adapter
            r["tokens_per_step"] = copies * 2 * a.batch * a.length  # both sequences of every pair, as unpacked
            r["packed_tokens_per_step"] = tokens
            runners[name] = (step, [])
        except Exception as e:  # e.g. out of memory: keep the other configuration's numbers
            r["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    for _ in range(a.repeats):  # alternate the configurations repeat by repeat
        for _name, (step, times) in runners.items():
            times.append(clock(step)[1])
    for name, (_step, times) in runners.items():
        r, med = out[name], statistics.median(times)
        r.update(step_s_median=round(med, 4), step_s_min_max=[round(min(times), 4), round(max(times), 4)],
                 tokens_per_s=round(r["tokens_per_step"] / med, 1),
                 model_tflops_per_s=round(r["model_flops"] / med / 1e12, 1),
                 mfu=round(r["model_flops"] / med / peak, 4) if peak else None,
                 hfu_with_remat=round(r["hardware_flops_with_remat"] / med / peak, 4) if peak else None)
        if r.get("xla_cost_analysis_flops"):
            r["xla_over_expected_one_layer_body"] = round(
                r["xla_cost_analysis_flops"] / r["expected_xla_flops_one_layer_body"], 3)
    return {
        "meta": {"mode": "gpu", "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                 "device_kind": dev.device_kind, "peak_bf16_flops_used": peak,
                 "model": f"llama {a.model}: hidden {h}, mlp {f}, {n_layers} layers, {heads} heads, vocab {vocab}, "
                          "random bf16 weights, bf16 compute, remat per layer",
                 "params": n_params, "matmul_params_N": n_matmul, "param_init_s": round(init_s, 2),
                 "pairs": a.batch, "length": a.length, "repeats": a.repeats,
                 "flops_formula": "model_flops = T*(4*N_layers + 12*layers*hidden*R + 6*N_adapter) + S*4*vocab*hidden, "
                                  "T = copies*B*R packed tokens, R = 1.5 L (each pair's prompt once, both responses), "
                                  "S = copies*B*L scored tokens (the head runs on the responses only; copies: "
                                  "GenARM 1, UniARM dim_global k+1 = 3); the frozen base costs 2N forward + 2N "
                                  "backward to activations (no weight grads), attention QK^T/PV 4*layers*hidden*R "
                                  "forward and twice that backward (dense, masked, as computed); "
                                  "tokens_per_s counts both sequences of every pair (copies*2*B*L), as unpacked; "
                                  "hardware_flops_with_remat adds the recomputed forward; MFU = model_flops / step "
                                  "time / peak_bf16_flops_used; xla_cost_analysis_flops counts the layer scan's "
                                  "while bodies once, so it is checked against expected_xla_flops_one_layer_body "
                                  "(on CPU the lowered HLO matches it to ~4%; a GPU backend answers only after "
                                  "compiling, and its count seems to leave out the cuBLAS GEMM custom calls)"},
        **out,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="the GPU mode (Llama-7B shape, random bf16 weights)")
    p.add_argument("--model", choices=("7b", "tiny"), default="7b", help="--gpu model shape (tiny: smoke test)")
    p.add_argument("--peak-flops", type=float, default=None, help="--gpu: override the peak bf16 FLOP/s")
    p.add_argument("--model-dir", default=None, help="CPU: HF directory (default: prepare_smollm2())")
    p.add_argument("--batch", type=int, default=None, help="pairs per step (default: CPU 2, GPU 4)")
    p.add_argument("--length", type=int, default=None, help="tokens per sequence (default: CPU 64, GPU 512)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--total-steps", type=int, default=1000)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--memory-lengths", default="", help="CPU: also our step's peak memory at these lengths "
                                                            "(comma-separated), each in a fresh process")
    p.add_argument("--torch-omp-wait-policy", choices=("auto", "default", "PASSIVE"), default="auto",
                   help="CPU: OMP_WAIT_POLICY for torch (auto: the faster of default and PASSIVE, timed first)")
    p.add_argument("--_omp_check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_probe", choices=PROBES, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.batch = a.batch or (4 if a.gpu else 2)
    a.length = a.length or (512 if a.gpu else 64)
    a.memory_lengths = [int(x) for x in a.memory_lengths.split(",") if x]
    if a.gpu:
        return print(json.dumps(gpu_main(a), indent=2))
    if a.model_dir is None:
        from uniarm_jax.hf.smollm2 import prepare_smollm2
        a.model_dir = prepare_smollm2(log=lambda m: print(m, file=sys.stderr))
    with open(os.path.join(a.model_dir, "config.json")) as fh:
        a.vocab = json.load(fh)["vocab_size"]
    a.forward_args = [f"--{k.replace('_', '-')}={getattr(a, k)}" for k in
                      ("model_dir", "batch", "length", "repeats", "rank", "beta", "lr", "warmup", "total_steps",
                       "weight_decay", "grad_clip")]
    if a._probe:
        return _probe(a._probe, a)
    if a._omp_check:
        return _omp_check(a)
    print(json.dumps(cpu_main(a), indent=2))


if __name__ == "__main__":
    main()
