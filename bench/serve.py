"""Serving benchmark: `uniarm serve` under 1, 8 and 32 concurrent streaming clients with mixed α, against
the same requests decoded one at a time as `uniarm sample` decodes them, in the same run. Prints one
JSON object.

Setting: the base is SmolLM2-135M-Instruct; the ARM is a weak-to-strong UniARM: the base's first 6
decoder layers (`truncate_layers`, embedding, final norm and tied head kept) saved as a model of its
own, carrying a MoSLoRA adapter (rank 8, q/k/v, k = 2) with random weights, so that α changes the
outputs; float32, greedy, chat template. Request i of 32 asks prompt i of the small task's prompts
with α = (i/31, 1 - i/31) and `max_tokens` = --max-tokens (a response may end earlier at EOS).

- Server: in this process (uvicorn in a thread, as the tests start it; the client in the main
  thread's event loop over loopback), `--slots 32`, prompts up to 64 tokens; every step width and both
  prompt buckets are compiled before the clock starts. With c clients, each client sends its share of
  the requests one after another (c = 1: 4 requests, 8: 16, 32: 32), streaming; throughput is all
  completion tokens over the wall time of the level; time to first token (TTFT) is from sending to
  the first chunk with text, inter-token latency (ITL) the gaps between text chunks.
- Reference: the same 32 requests through `guided_generate` one at a time (what `uniarm sample` runs
  per batch, here batch 1), compiled before the clock starts. The server's tokens are compared with
  them (greedy: they must agree token for token). One whole `uniarm sample` process for one request is
  timed as well (load + compiled programs from the persistent cache + decode), what "one call at a
  time" costs as a command.

The machine is shared and noisy: compare the ratios of this run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402

import uniarm_jax  # noqa: E402
from uniarm_jax.commands.main import build_parser  # noqa: E402
from uniarm_jax.commands.serve import build_server  # noqa: E402
from uniarm_jax.compilation import enable_persistent_cache  # noqa: E402
from uniarm_jax.data.tokenization import TokenizeConfig, encode_prompt  # noqa: E402
from uniarm_jax.decode.guides import load_guides  # noqa: E402
from uniarm_jax.decode.rollout import guided_generate  # noqa: E402
from uniarm_jax.hf.adapter_files import save_adapter  # noqa: E402
from uniarm_jax.hf.smollm2 import prepare_smollm2  # noqa: E402
from uniarm_jax.model.adapters import AdapterConfig  # noqa: E402
from uniarm_jax.model.arm import init_adapter  # noqa: E402
from uniarm_jax.model.handle import truncate_layers  # noqa: E402

LEVELS = {1: 4, 8: 16, 32: 32}  # clients -> requests
MAX_PROMPT = 64


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_arm(base_dir: str, out: str, layers: int) -> str:
    """The 6-layer base with a random MoSLoRA adapter (std 0.05: α visibly matters, text stays text)."""
    small = truncate_layers(uniarm_jax.load_pretrained(base_dir, "float32"), layers)
    uniarm_jax.save_pretrained(small, os.path.join(out, "arm_base"))
    small = uniarm_jax.load_pretrained(os.path.join(out, "arm_base"), "float32")
    arm = init_adapter(small, AdapterConfig(kind="moslora", num_objectives=2), seed=0)
    leaves, tree = jax.tree.flatten(arm.adapter)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    arm.adapter = jax.tree.unflatten(tree, [0.05 * jax.random.normal(k, x.shape, x.dtype)
                                            for k, x in zip(keys, leaves)])
    save_adapter(arm, os.path.join(out, "uniarm"), objectives=["a", "b"])
    return os.path.join(out, "uniarm")


def requests(n: int = 32) -> list[tuple[str, list[float]]]:
    with open(os.path.join(REPO, "data", "study", "test_prompts.jsonl")) as f:
        prompts = [json.loads(line)["prompt"] for line in f][:n]
    return [(p, [round(i / (n - 1), 4), round(1 - i / (n - 1), 4)]) for i, p in enumerate(prompts)]


def percentiles(xs: list[float]) -> dict:
    xs = np.asarray(xs) * 1000
    return {"p50": round(float(np.percentile(xs, 50)), 1), "p95": round(float(np.percentile(xs, 95)), 1),
            "n": int(xs.size)}


async def one_request(client, model: str, prompt: str, pref, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "preference": pref}
    sent, stamps, ids = time.perf_counter(), [], None
    async with client.stream("POST", "/v1/chat/completions", json=body) as res:
        res.raise_for_status()
        async for line in res.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            for choice in event["choices"]:
                if choice.get("delta", {}).get("content"):
                    stamps.append(time.perf_counter())
                ids = choice.get("token_ids", ids)
    return {"ttft": stamps[0] - sent if stamps else None, "gaps": list(np.diff(stamps)), "ids": ids}


async def level(url: str, model: str, clients: int, reqs: list, max_tokens: int) -> tuple[dict, list]:
    import httpx2 as httpx

    shares = [reqs[i::clients] for i in range(clients)]
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        async def worker(share):
            return [await one_request(client, model, p, a, max_tokens) for p, a in share]

        began = time.perf_counter()
        done = await asyncio.gather(*(worker(s) for s in shares))
        wall = time.perf_counter() - began
    results = [r for share in done for r in share]
    order = [r for i in range(clients) for r in reqs[i::clients]]
    tokens = sum(len(r["ids"]) for r in results)
    return ({"clients": clients, "requests": len(results), "tokens": tokens, "wall_s": round(wall, 2),
             "tokens_per_s": round(tokens / wall, 1),
             "ttft_ms": percentiles([r["ttft"] for r in results if r["ttft"] is not None]),
             "itl_ms": percentiles([g for r in results for g in r["gaps"]])},
            [(req, r["ids"]) for req, r in zip(order, results)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", default=None, help="SmolLM2-135M-Instruct (default: prepare-smollm2's)")
    p.add_argument("--arm-layers", type=int, default=6)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--slots", type=int, default=32)
    a = p.parse_args()
    enable_persistent_cache()
    base_dir = a.model_dir or prepare_smollm2()
    tmp = tempfile.TemporaryDirectory()
    arm_dir = make_arm(base_dir, tmp.name, a.arm_layers)
    reqs = requests()

    # the reference: one request at a time through guided_generate (uniarm sample's decoding)
    base = uniarm_jax.load_pretrained(base_dir, "float32")
    tokenizer = uniarm_jax.load_tokenizer(base_dir)
    (arm,), _ = load_guides([arm_dir], None, base, tokenizer, "float32")
    tcfg = TokenizeConfig("chat", max_prompt_tokens=MAX_PROMPT, max_total_tokens=MAX_PROMPT + a.max_tokens)
    encoded = [encode_prompt(tokenizer, prompt, tcfg)[0] for prompt, _ in reqs]
    for ids in {len(e) > 32: e for e in encoded}.values():  # compile both buckets first
        guided_generate(base, [arm], [ids], a.max_tokens, pref=[0.5, 0.5], pad_id=tokenizer.pad_token_id)
    log("reference: one request at a time")
    began, reference = time.perf_counter(), []
    for ids, (_, pref) in zip(encoded, reqs):
        reference.append(guided_generate(base, [arm], [ids], a.max_tokens, pref=pref,
                                         pad_id=tokenizer.pad_token_id)[0][0])
    ref_wall = time.perf_counter() - began
    ref_tokens = sum(len(t) for t in reference)
    expected = {prompt: ids for (prompt, _), ids in zip(reqs, reference)}
    del base, arm

    # the server
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = build_parser().parse_args(["serve", "--base", base_dir, "--arm", arm_dir, "--slots", str(a.slots),
                                      "--max-prompt-tokens", str(MAX_PROMPT), "--max-new-tokens", str(a.max_tokens),
                                      "--port", str(port), "--log-level", "warning"])
    log("server: compiling every step width")
    t0 = time.perf_counter()
    service, server = build_server(args)
    service.start()
    startup = time.perf_counter() - t0
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    asyncio.run(level(url, service.guided_id, 2, [r for r, e in zip(reqs, encoded) if len(e) > 32][:1] +
                      [r for r, e in zip(reqs, encoded) if len(e) <= 32][:1], 2))  # both join buckets compiled
    levels, agree, total = [], 0, 0
    for clients, n in LEVELS.items():
        log(f"server: {clients} clients")
        stats, answers = asyncio.run(level(url, service.guided_id, clients, reqs[:n], a.max_tokens))
        levels.append(stats)
        agree += sum(ids == expected[prompt] for (prompt, _), ids in answers)
        total += len(answers)
    server.should_exit = True
    thread.join()
    service.stop()

    # one whole `uniarm sample` process for one request (its programs from the persistent cache)
    prompts = os.path.join(tmp.name, "one.jsonl")
    with open(prompts, "w") as f:
        f.write(json.dumps({"prompt": reqs[0][0]}) + "\n")
    cmd = [sys.executable, "-m", "uniarm_jax.commands.main", "sample", "--no-progress", "--base", base_dir, "--arm",
           arm_dir, "--pref", "0,1", "--prompts", prompts, "--out", os.path.join(tmp.name, "o.jsonl"),
           "--max-new-tokens", str(a.max_tokens), "--max-prompt-tokens", str(MAX_PROMPT), "--template", "chat"]
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run(cmd, check=True, capture_output=True, env=env)  # fills the persistent cache
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    process_s = time.perf_counter() - t0

    ref_rate = ref_tokens / ref_wall
    print(json.dumps({
        "setting": f"SmolLM2-135M-Instruct base + UniARM = its first {a.arm_layers} layers with a random MoSLoRA "
                   "(r=8, q/k/v, k=2); float32; greedy; chat template; 32 requests with alpha = (i/31, 1 - i/31); "
                   f"max_tokens {a.max_tokens}; --slots {a.slots}; prompts up to {MAX_PROMPT} tokens",
        "machine": f"{os.cpu_count()} CPU cores, shared (noisy); jax {jax.__version__} on {jax.devices()[0].platform}",
        "server": levels,
        "server_startup_s": round(startup, 1),
        "reference_one_at_a_time": {"requests": len(reqs), "tokens": ref_tokens, "wall_s": round(ref_wall, 2),
                                    "tokens_per_s": round(ref_rate, 1),
                                    "what": "guided_generate at batch 1, compiled, one request after another "
                                            "(uniarm sample's decoding)"},
        "throughput_vs_one_at_a_time": {str(s["clients"]): round(s["tokens_per_s"] / ref_rate, 2) for s in levels},
        "greedy_agreement_with_reference": f"{agree}/{total}",
        "uniarm_sample_process_one_request_s": round(process_s, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
