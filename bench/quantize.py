"""int8 weight-only bases on SmolLM2-135M-Instruct: weight memory, decode speed and fidelity to float32,
one JSON object.

Settings (`load_pretrained` arguments): `float32`; `bfloat16`; `int8` (int8 projection kernels, the
embedding / tied head and norms float32, float32 compute); `int8_bf16` (the same over bfloat16: the
embedding and norms bfloat16, bfloat16 compute).

- memory: bytes of each loaded parameter tree, and of its projection kernels alone (int8: `kernel_q`
  and `scale`); the same from shapes only for a Llama-2-7B-shaped model (vocab 32000, untied).
- decode: the base alone, greedy, EOS off, chat-templated prompts of one length (bench/decode.py's
  `make_prompts`); per-token time = (median rollout of n new tokens - median rollout of 1) / (n - 1),
  so prefill and call overheads cancel; tok/s = batch / per-token time. Settings alternate within each
  repeat. The greedy tokens of the n-token rollouts are compared with float32's (free running).
- fidelity: the study's 100 test prompts (data/study/test_prompts.jsonl), float32's own
  greedy continuation (`--agree-tokens`, up to EOS), every setting teacher-forced over prompt +
  continuation: at each continuation position (the last prompt token's through the one before the
  last token) its argmax against float32's, and the largest |logit - float32 logit| there.

    PYTHONPATH=. .venv/bin/python bench/quantize.py [--parts memory,fidelity,decode] [--batches 1,8
        --new-tokens 32 --repeats 3 --agree-tokens 48]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics

import numpy as np
from common import clock  # bench/ is this script's sys.path[0]
from decode import agreement, make_prompts, ours_generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"float32": dict(dtype="float32"), "bfloat16": dict(dtype="bfloat16"),
            "int8": dict(dtype="float32", quantize="int8"), "int8_bf16": dict(dtype="bfloat16", quantize="int8")}


def tree_bytes(tree) -> int:
    import jax
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def memory(handles: dict) -> dict:
    """Whole trees and projection kernels per setting, in MB, with ratios to bfloat16; a 7B from shapes."""
    from uniarm_jax.model.config import LlamaConfig
    from uniarm_jax.model.llama import param_shapes
    from uniarm_jax.model.projections import PROJECTIONS

    def kernels(params):
        return tree_bytes([params["layers"][p.group][p.name] for p in PROJECTIONS])

    out = {}
    for name, h in handles.items():
        out[name] = {"params_mb": round(tree_bytes(h.params) / 1e6, 1), "kernels_mb": round(kernels(h.params) / 1e6, 1)}
    for name in out:
        out[name]["params_over_bf16"] = round(out[name]["params_mb"] / out["bfloat16"]["params_mb"], 3)
        out[name]["kernels_over_bf16"] = round(out[name]["kernels_mb"] / out["bfloat16"]["kernels_mb"], 3)
    llama7b = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=32, head_dim=128, param_dtype="bfloat16")
    bf16, q8 = (param_shapes(LlamaConfig(**llama7b, quantize=q)) for q in (None, "int8"))
    out["llama2_7b_shapes"] = {"bfloat16_gb": round(tree_bytes(bf16) / 1e9, 2),
                               "int8_bf16_gb": round(tree_bytes(q8) / 1e9, 2),
                               "params_over_bf16": round(tree_bytes(q8) / tree_bytes(bf16), 3)}
    return out


def decode_speed(handles: dict, tokenizer, a) -> dict:
    """Per batch and setting: tok/s from the difference of n- and 1-token rollouts, alternating settings."""
    prompts = make_prompts(tokenizer, max(a.batches), a.prompt_len)
    out = {}
    for b in a.batches:
        rows = prompts[:b]
        runs = {(name, n): (lambda h=h, n=n: ours_generate(h, [], rows, n)) for name, h in handles.items()
                for n in (a.new_tokens, 1)}
        first = {k: fn() for k, fn in runs.items()}  # compile
        times = {k: [] for k in runs}
        for _ in range(a.repeats):
            for k, fn in runs.items():
                times[k].append(clock(fn)[1])
        med = {k: statistics.median(v) for k, v in times.items()}
        result = {}
        for name in handles:
            step = (med[(name, a.new_tokens)] - med[(name, 1)]) / (a.new_tokens - 1)
            result[name] = {"tokens_per_s": round(b / step, 1), "per_token_ms": round(step * 1e3, 3),
                            "greedy_vs_float32": agreement(first[(name, a.new_tokens)],
                                                           first[("float32", a.new_tokens)])}
        for name in handles:
            speed = result[name]["tokens_per_s"] / result["float32"]["tokens_per_s"]
            result[name]["speed_over_float32"] = round(speed, 3)
        out[f"batch_{b}"] = result
    return out


def fidelity(handles: dict, tokenizer, a) -> dict:
    """Teacher-forced top-1 agreement with float32 over float32's greedy continuations, and logit drift."""
    import uniarm_jax
    from uniarm_jax.data.prompts import read_prompts
    from uniarm_jax.data.tokenization import encode_prompts
    from uniarm_jax.decode.generate import generate_ids

    ref = handles["float32"]
    texts = read_prompts(os.path.join(REPO, "data", "study", "test_prompts.jsonl"))
    prompts = encode_prompts(tokenizer, texts, "chat", a.agree_tokens, ref.config.max_position_embeddings)
    rows = [p + c for p, c in zip(prompts, generate_ids(ref, prompts, a.agree_tokens, pad_id=tokenizer.pad_token_id))]
    width = max(map(len, rows))
    ids, mask, scored = (np.zeros((len(rows), width), t) for t in (np.int32, np.int32, bool))
    for i, (p, r) in enumerate(zip(prompts, rows)):  # left-padded; scored: positions that predict a continuation token
        ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
        scored[i, width - len(r) + len(p) - 1:width - 1] = True
    same = {name: [] for name in handles if name != "float32"}
    drift = dict.fromkeys(same, 0.0)
    chunk = 8
    for start in range(0, len(rows), chunk):  # one shape for every chunk: the last one padded with its last row
        index = np.minimum(np.arange(start, start + chunk), len(rows) - 1)
        keep = np.arange(start, start + chunk) < len(rows)
        sel = scored[index] & keep[:, None]
        expected = uniarm_jax.logits(ref, ids[index], mask[index])
        for name in same:
            got = uniarm_jax.logits(handles[name], ids[index], mask[index])
            same[name].append((got.argmax(-1) == expected.argmax(-1))[sel])
            drift[name] = max(drift[name], float(np.abs(got - expected)[sel].max()))
    positions = int(scored.sum())
    return {"prompts": len(rows), "positions": positions, "continuation_tokens": a.agree_tokens,
            **{name: {"top1_agreement": round(float(np.concatenate(s).mean()), 4),
                      "top1_disagreements": int((~np.concatenate(s)).sum()),
                      "max_abs_logit_drift": round(drift[name], 3)} for name, s in same.items()}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="memory,fidelity,decode", help="which measurements, comma-separated")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--agree-tokens", type=int, default=48)
    a = p.parse_args()
    a.batches = [int(b) for b in a.batches.split(",")]

    import jax

    import uniarm_jax
    from uniarm_jax.hf.smollm2 import prepare_smollm2

    path = prepare_smollm2()
    tokenizer = uniarm_jax.load_tokenizer(path)
    handles = {}
    for name, kwargs in SETTINGS.items():
        h = uniarm_jax.load_pretrained(path, **kwargs)
        jax.block_until_ready(h.params)
        handles[name] = h
    result = {"model": "SmolLM2-135M-Instruct", "device": str(jax.devices()[0].device_kind), "settings": SETTINGS}
    parts = a.parts.split(",")
    if "memory" in parts:
        result["memory"] = memory(handles)
    if "fidelity" in parts:
        result["fidelity"] = fidelity(handles, tokenizer, a)
    if "decode" in parts:
        no_eos = {k: dataclasses.replace(h, config=h.config.replace(eos_token_id=None)) for k, h in handles.items()}
        result["decode"] = decode_speed(no_eos, tokenizer, a)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
