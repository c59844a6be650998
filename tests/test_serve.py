"""`uniarm serve` on loopback, driven by the official `openai` client and raw HTTP, against offline
guided decoding (`guided_generate` and `uniarm sample`, the oracles): every request's tokens equal the
offline answer for its prompt, α, seed and max_tokens, also when 32 streaming clients share the slots;
every bad input is OpenAI's 400 error naming the field; a full queue is 429 with Retry-After; a client
that goes away frees its slot; steady state never compiles again."""

import asyncio
import contextlib
import json
import math
import re
import threading
import time

import httpx2 as httpx
import jax.numpy as jnp
import openai
import pytest

import uniarm_jax
from tests.cli_runner import run_uniarm
from tests.serve_setup import LIMITS, make_models, running_server
from uniarm_jax.data.tokenization import TokenizeConfig, encode_prompt
from uniarm_jax.decode import slots as slot_programs
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.decode.sampling import Sampler

PROMPTS = ["Name some fruit.", "What is in the basket?", "Say six words.", "List what you ate.",
           "apple banana cherry grape", "Name some fruit. Say six words."]
PREFS = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    models = make_models(root)
    with running_server("--base", models["base_dir"], "--arm", models["arm_dir"], "--slots", 4, "--max-queue", 32,
                        *LIMITS) as (url, service):
        yield {**models, "root": root, "url": url, "service": service, "oracle": {},
               "client": openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)}


def offline(setup, prompt: str, n: int, pref=None, guided=True, sampler=Sampler(), seed=0) -> list[int]:
    """`uniarm sample --template chat`'s tokens for one prompt: the oracle of every response here. The
    model has no EOS, so the first n tokens of a 12- or 96-token rollout are the rollout of n (two
    lengths, two compilations)."""
    tok, length = setup["tokenizer"], 12 if n <= 12 else 96
    key = (prompt, None if pref is None else tuple(pref), guided, sampler, seed, length)
    if key not in setup["oracle"]:
        ids, _, _ = encode_prompt(tok, prompt, TokenizeConfig("chat", max_prompt_tokens=32, max_total_tokens=128))
        out, _ = guided_generate(setup["base"], [setup["arm"]] if guided else [], [ids], length,
                                 pref=pref if guided else None, sampler=sampler, seed=seed, pad_id=tok.pad_token_id)
        setup["oracle"][key] = out[0]
    return setup["oracle"][key][:n]


def chat(setup, prompt, **kw):
    pref = kw.pop("preference", None)
    return setup["client"].chat.completions.create(
        model=kw.pop("model", setup["service"].guided_id), messages=[{"role": "user", "content": prompt}],
        extra_body=None if pref is None else {"preference": pref}, **kw)


def text_of(setup, ids):
    return setup["tokenizer"].decode(ids, skip_special_tokens=True)


def test_models_list_the_guided_and_the_base_with_objectives(setup):
    models = {m.id: m for m in setup["client"].models.list().data}
    assert set(models) == {"base+uniarm", "base"}
    guided = models["base+uniarm"].model_extra
    assert guided["objectives"] == ["fruit", "berry"] and guided["default_preference"] == [0.5, 0.5]
    assert models["base"].model_extra["kind"] == "base"
    health = httpx.get(setup["url"] + "/health").json()
    assert health["status"] == "ok" and health["slots"] == 4


def test_greedy_chat_equals_offline_token_for_token_and_uniarm_sample(setup, tmp_path):
    rows = [(p, a) for p, a in zip(PROMPTS, PREFS)]
    for prompt, pref in rows:
        res = chat(setup, prompt, preference=pref, max_tokens=7, temperature=0)
        choice = res.choices[0]
        expected = offline(setup, prompt, 7, pref)
        assert choice.model_extra["token_ids"] == expected
        assert choice.message.content == text_of(setup, expected) and choice.finish_reason == "length"
        assert res.usage.completion_tokens == 7 and res.model_extra["preference"] == pref
    # α changes the guided answer (the ARM's modulation is strong): the test can tell α's apart
    assert len({tuple(offline(setup, PROMPTS[0], 7, p)) for p in PREFS}) > 1

    with open(tmp_path / "prompts.jsonl", "w") as f:
        f.writelines(json.dumps({"prompt": p}) + "\n" for p, _ in rows)
    out = tmp_path / "sample.jsonl"
    res = run_uniarm("sample", "--no-progress", "--base", setup["base_dir"], "--arm", setup["arm_dir"], "--pref", "1,0",
                     "--pref", "0.2,0.8", "--prompts", tmp_path / "prompts.jsonl", "--out", out, "--max-new-tokens", 7,
                     "--max-prompt-tokens", 32, "--template", "chat", "--batch-size", 12)
    assert res.returncode == 0, res.stderr
    for line in open(out):
        row = json.loads(line)
        served = chat(setup, row["prompt"], preference=row["pref"], max_tokens=7)
        assert served.choices[0].message.content == row["text"]
        assert served.choices[0].model_extra["token_ids"] == row["token_ids"]


def test_default_preference_base_alone_and_completions(setup):
    res = chat(setup, PROMPTS[1], max_tokens=6)  # no preference: the server's default, uniform
    assert res.choices[0].model_extra["token_ids"] == offline(setup, PROMPTS[1], 6, [0.5, 0.5])
    base = chat(setup, PROMPTS[1], max_tokens=6, model="base")
    assert base.choices[0].model_extra["token_ids"] == offline(setup, PROMPTS[1], 6, guided=False)
    done = setup["client"].completions.create(model="base+uniarm", prompt=PROMPTS[2], max_tokens=5,
                                              extra_body={"preference": [0.2, 0.8]})
    expected = offline(setup, PROMPTS[2], 5, [0.2, 0.8])  # the --template (chat) frames completion prompts too
    assert done.object == "text_completion" and done.choices[0].text == text_of(setup, expected)
    assert done.usage.prompt_tokens == len(encode_prompt(setup["tokenizer"], PROMPTS[2], TokenizeConfig("chat"))[0])


def test_streaming_is_openai_chunks_that_add_up_to_the_response(setup):
    stream = chat(setup, PROMPTS[3], preference=[0.9, 0.1], max_tokens=9, stream=True,
                  stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = offline(setup, PROMPTS[3], 9, [0.9, 0.1])
    assert final[0].choices[0].model_extra["token_ids"] == expected and text == text_of(setup, expected)

    # the wire: server-sent events, each `data: {json}`, the last `data: [DONE]`
    body = {"model": "base", "prompt": PROMPTS[0], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", setup["url"] + "/v1/completions", json=body) as res:
        assert res.headers["content-type"].startswith("text/event-stream")
        events = [e for e in res.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: {") for e in events[:-1])
    pieces = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(p["choices"][0]["text"] for p in pieces) == text_of(setup, offline(setup, PROMPTS[0], 4,
                                                                                        guided=False))


def test_sampling_equals_offline_for_the_same_seed(setup):
    """temperature and top_p are per request, the rng is per request: the sampled tokens are those of
    the offline rollout with the same seed, reproducible, and another seed gives others."""
    sampler = Sampler(temperature=0.9, top_p=0.8)
    got = [chat(setup, PROMPTS[0], preference=[0.3, 0.7], max_tokens=12, temperature=0.9, top_p=0.8, seed=s)
           .choices[0].model_extra["token_ids"] for s in (7, 7, 8)]
    assert got[0] == offline(setup, PROMPTS[0], 12, [0.3, 0.7], sampler=sampler, seed=7) == got[1]
    assert got[2] == offline(setup, PROMPTS[0], 12, [0.3, 0.7], sampler=sampler, seed=8) != got[0]


def test_32_concurrent_streaming_clients_with_mixed_preferences(setup):
    """32 streams at once into 4 slots, mixed α, models and lengths: every one completes with its own
    offline answer (nothing lost, nothing mixed between requests), and the rows shared steps."""
    service = setup["service"]
    jobs = [(PROMPTS[i % len(PROMPTS)], PREFS[i % len(PREFS)], "base" if i % 7 == 3 else service.guided_id,
             (5, 8, 11)[i % 3]) for i in range(32)]
    client = openai.AsyncOpenAI(base_url=setup["url"] + "/v1", api_key="unused", max_retries=0)

    async def one(prompt, pref, model, n):
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=n, stream=True,
            extra_body={"preference": pref} if model != "base" else None)
        text, ids = "", None
        async for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
                ids = c.choices[0].model_extra.get("token_ids", ids)
        return text, ids

    async def everyone():
        return await asyncio.gather(*(one(*job) for job in jobs))

    steps = service.scheduler.steps
    results = asyncio.run(everyone())
    for (prompt, pref, model, n), (text, ids) in zip(jobs, results):
        expected = offline(setup, prompt, n, pref, guided=model != "base")
        assert ids == expected and text == text_of(setup, expected)
    assert service.scheduler.steps - steps < sum(n for *_, n in jobs) / 3  # 4 rows per step, nearly always
    assert service.scheduler.load()["busy"] == 0


def test_a_request_joins_while_another_decodes(setup):
    """A short request sent while a long one streams is answered before the long one ends."""
    events, long_started = [], threading.Event()

    def long_request():
        for c in chat(setup, PROMPTS[4], preference=[1, 0], max_tokens=96, stream=True):
            long_started.set()
            if c.choices and c.choices[0].finish_reason:
                events.append("long done")

    thread = threading.Thread(target=long_request)
    thread.start()
    assert long_started.wait(30)
    res = chat(setup, PROMPTS[2], preference=[0, 1], max_tokens=3)
    events.append("short done")
    thread.join()
    assert events == ["short done", "long done"]
    assert res.choices[0].model_extra["token_ids"] == offline(setup, PROMPTS[2], 3, [0, 1])


def test_steady_state_never_compiles(setup):
    chat(setup, PROMPTS[0], max_tokens=3)
    sizes = slot_programs.step._cache_size(), slot_programs.join._cache_size()
    for i, pref in enumerate(PREFS):
        chat(setup, PROMPTS[i], preference=pref, max_tokens=2 + i, temperature=0.5 * (i % 2), top_p=0.9, seed=i)
    chat(setup, PROMPTS[5], model="base", max_tokens=4)
    assert (slot_programs.step._cache_size(), slot_programs.join._cache_size()) == sizes


def raw(setup, body, path="/v1/chat/completions"):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(setup["url"] + path, content=content, headers={"content-type": "application/json"})


LONG = " ".join(["apple"] * 40)
BAD = [  # (body changes, the field named, words in the message)
    ({"preference": [0.5, 0.3, 0.2]}, "preference", "must have 2 entries"),
    ({"preference": [1.5, -0.5]}, "preference", "negative"),
    ("NaN", "preference", "non-finite"),
    ({"preference": [0.7, 0.7]}, "preference", "sums to 1.4"),
    ({"preference": "fruit"}, "preference", "valid list"),
    ({"model": "gpt-4"}, "model", "not served here"),
    ({"model": "base", "preference": [0.5, 0.5]}, "preference", "takes no preference"),
    ({"max_tokens": 0}, "max_tokens", "expected 1 to 96"),
    ({"max_tokens": 97}, "max_tokens", "expected 1 to 96"),
    ({"max_tokens": 2.5}, "max_tokens", "valid integer"),
    ({"messages": [{"role": "user", "content": LONG}]}, "messages", "at most 32"),
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role", "'system', 'user' or 'assistant'"),
    ({"temperature": 3}, "temperature", "0 (greedy) to 2"),
    ({"top_p": 0}, "top_p", "more than 0"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
    ({"n": 2}, "n", "n=1"),
    ({"seed": -1}, "seed", "0 to"),
]


@pytest.mark.parametrize("change,field,words", BAD, ids=[f"{b[1]}:{b[2]}" for b in BAD])
def test_bad_input_is_openai_400_naming_the_field(setup, change, field, words):
    body = {"model": "base+uniarm", "messages": [{"role": "user", "content": "Name some fruit."}], "max_tokens": 2}
    if change == "NaN":  # Python's JSON reads NaN; a client can send it
        res = raw(setup, json.dumps({**body, "preference": [math.nan, 1.0]}))
    else:
        res = raw(setup, {**body, **change})
    assert res.status_code == 400, res.text
    err = res.json()["error"]
    assert set(err) >= {"message", "type", "param"} and err["type"] == "invalid_request_error"
    assert err["param"] == field and words in err["message"], err
    assert str(setup["root"]) not in res.text and "Traceback" not in res.text and "/" not in err["message"]


def test_malformed_requests_and_the_server_keeps_serving(setup):
    for content in (b"{not json", b"[1, 2]", b""):
        res = raw(setup, content)
        assert res.status_code == 400 and res.json()["error"]["type"] == "invalid_request_error", res.text
    res = raw(setup, {"model": "base", "prompt": ["a", "b"]}, "/v1/completions")
    assert res.status_code == 400 and res.json()["error"]["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:  # the official client sees OpenAI's error too
        chat(setup, PROMPTS[0], preference=[2.0, -1.0])
    assert caught.value.body["param"] == "preference"
    assert httpx.get(setup["url"] + "/nowhere").json()["error"]["message"] == "Not Found"
    res = chat(setup, PROMPTS[0], preference=[1, 0], max_tokens=4)  # still serving, still exact
    assert res.choices[0].model_extra["token_ids"] == offline(setup, PROMPTS[0], 4, [1, 0])


def test_a_full_queue_is_429_with_retry_after(setup):
    """With room for 1 waiting request, 10 at once: 4 decode, 1 waits, the others are refused at once
    with 429 and Retry-After (no backlog); the accepted ones complete exactly; then it serves again."""
    scheduler = setup["service"].scheduler
    scheduler.max_queue = 1
    body = {"model": "base+uniarm", "messages": [{"role": "user", "content": PROMPTS[1]}], "max_tokens": 96,
            "preference": [0.5, 0.5]}

    async def everyone():
        async with httpx.AsyncClient(base_url=setup["url"], timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(10)))

    try:
        results = asyncio.run(everyone())
    finally:
        scheduler.max_queue = 32
    refused = [r for r in results if r.status_code == 429]
    accepted = [r for r in results if r.status_code == 200]
    assert len(refused) + len(accepted) == 10 and 1 <= len(accepted) <= 5 and refused, [r.status_code for r in results]
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error"
    expected = offline(setup, PROMPTS[1], 96, [0.5, 0.5])
    assert all(r.json()["choices"][0]["token_ids"] == expected for r in accepted)
    assert chat(setup, PROMPTS[1], max_tokens=2).choices[0].model_extra["token_ids"] == expected[:2]


def wait_idle(service, timeout=60.0):
    """Waits for the scheduler to go idle; generous, so a slower or busier CPU only waits longer (the
    tests assert on step counts, never on time)."""
    deadline = time.monotonic() + timeout
    while service.scheduler.load()["busy"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return service.scheduler.load()["busy"] == 0


@contextlib.contextmanager
def held_until_cancelled(scheduler):
    """Holds the decode loop before its second step until a request in flight is cancelled: the test
    then sees the disconnect free the slot however fast this CPU decodes (a tiny model's 96 steps can
    end before a 50 ms client timeout is noticed). The hold gives up after 60 s, and the assertion
    fails then, so a disconnect that is never noticed still fails the test."""
    slots, first = scheduler.slots, scheduler.steps + 1

    def step(*args, **kwargs):
        deadline = time.monotonic() + 60.0
        while (scheduler.steps >= first and time.monotonic() < deadline
               and not any(job is not None and job.cancelled for job in scheduler.jobs)):
            time.sleep(0.005)
        return type(slots).step(slots, *args, **kwargs)

    slots.step = step
    try:
        yield
    finally:
        del slots.step


def test_a_client_that_disconnects_frees_its_slot(setup):
    service = setup["service"]
    assert wait_idle(service)
    steps = service.scheduler.steps
    body = {"model": "base+uniarm", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 96,
            "stream": True}
    with held_until_cancelled(service.scheduler):
        with httpx.stream("POST", setup["url"] + "/v1/chat/completions", json=body) as res:
            next(res.iter_bytes())  # the first chunk, then the client goes away
        assert wait_idle(service)
    assert service.scheduler.steps - steps <= 3  # freed at the step boundary after the cancel, not after 96

    # the same without streaming: the client closes its connection while the answer is computed
    steps = service.scheduler.steps
    with held_until_cancelled(service.scheduler):
        with httpx.Client(base_url=setup["url"], timeout=0.05) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post("/v1/chat/completions", json={**body, "stream": False})
        assert wait_idle(service)
    assert service.scheduler.steps - steps <= 3
    res = chat(setup, PROMPTS[0], preference=[0.5, 0.5], max_tokens=3)  # the freed slots serve again
    assert res.choices[0].model_extra["token_ids"] == offline(setup, PROMPTS[0], 3, [0.5, 0.5])


def test_stop_strings_and_eos_end_a_response(setup):
    expected = offline(setup, PROMPTS[0], 12, [0.2, 0.8])
    words = text_of(setup, expected).split()
    stop = words[2]
    cut = text_of(setup, expected)[:text_of(setup, expected).find(stop)]
    res = chat(setup, PROMPTS[0], preference=[0.2, 0.8], max_tokens=12, stop=[stop, "zebra"])
    assert res.choices[0].message.content == cut and res.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       chat(setup, PROMPTS[0], preference=[0.2, 0.8], max_tokens=12, stop=stop, stream=True)
                       if c.choices)
    assert streamed == cut

    # EOS: the base's config has none; with the fifth greedy token as EOS the response ends there
    scheduler, eos = setup["service"].scheduler, expected[4]
    scheduler.eos_ids = frozenset([eos])
    try:
        res = chat(setup, PROMPTS[0], preference=[0.2, 0.8], max_tokens=12)
    finally:
        scheduler.eos_ids = frozenset()
    base = setup["base"]
    stopping = base.__class__(base.config.replace(eos_token_id=int(eos)), base.params)
    ids, _, _ = encode_prompt(setup["tokenizer"], PROMPTS[0], TokenizeConfig("chat", 32, 128))
    (oracle,), _ = guided_generate(stopping, [setup["arm"]], [ids], 12, pref=[0.2, 0.8])
    assert res.choices[0].model_extra["token_ids"] == oracle == expected[:expected.index(eos) + 1]
    assert res.choices[0].finish_reason == "stop" and res.usage.completion_tokens == len(oracle)


def test_the_step_updates_every_cache_in_place(setup):
    """The compiled full-width step, read as XLA compiled it: the state is donated (its buffers
    aliased to the outputs) and no cache-sized array is copied."""
    service = setup["service"]
    slots = service.scheduler.slots
    rows = {k: jnp.asarray(v) for k, v in slots.rows.items()}
    compiled = slot_programs.step.lower(slots.base_weights, slots.guide_weights, slots.state, rows,
                                        plan=slots.plan, width=slots.plan.slots).compile()
    hlo = compiled.as_text()
    cfg, plan = service.base.config, slots.plan
    cache = rf"f32\[{plan.slots},{plan.length},{cfg.num_key_value_heads},{cfg.head_dim}\]"
    assert "input_output_alias" in hlo
    copies = [line for line in hlo.splitlines() if re.search(rf"= {cache}\S* copy\(", line)]
    assert not copies, copies[:3]


def test_slots_with_the_base_sharded_over_the_tensor_axis(setup):
    """`--mesh`: the base split 8 ways over `tensor`, the slots' state on the same devices (replicated):
    a row's tokens are still the unsharded offline ones."""
    import dataclasses

    import uniarm_jax
    from uniarm_jax.decode import engine
    from uniarm_jax.decode.rollout import left_pad
    from uniarm_jax.model.sharding import make_mesh

    mesh = make_mesh(1, 1, 8)
    base = uniarm_jax.load_pretrained(setup["base_dir"], mesh=mesh)
    assert base.params["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec[2] == "tensor"
    arm = dataclasses.replace(base, adapter_config=setup["arm"].adapter_config, adapter=setup["arm"].adapter)
    plan = slot_programs.SlotPlan(base.config, ((arm.config, arm.adapter_config),), 2, 64, 0, 0)
    slots = slot_programs.DecodeSlots(plan, engine.decode_weights(base), (engine.decode_weights(arm),), 2, mesh=mesh)
    prompt = encode_prompt(setup["tokenizer"], PROMPTS[3], TokenizeConfig("chat", 32, 128))[0]
    slots.join(1, *left_pad([prompt], 32, 0), seed=0, base_weight=1.0, weights=[1.0], pref=[0.3, 0.7],
               temperature=0.0, top_p=1.0)
    assert [int(slots.step()[1]) for _ in range(6)] == offline(setup, PROMPTS[3], 6, [0.3, 0.7])


def test_the_command_refuses_bad_settings_before_serving(setup):
    res = run_uniarm("serve", "--base", setup["base_dir"], "--arm", setup["arm_dir"], "--default-preference", "0.7,0.7",
                     *LIMITS)
    assert res.returncode == 2 and "sums to 1.4" in res.stderr
    res = run_uniarm("serve", "--base", setup["base_dir"], "--max-prompt-tokens", 64, "--max-new-tokens", 96)
    assert res.returncode == 2 and "exceed a model's max_position_embeddings=128" in res.stderr
    res = run_uniarm("serve", "--base", setup["base_dir"], "--template", "pku", "--temperature", -1)
    assert res.returncode == 2 and "temperature must be >= 0" in res.stderr


def test_the_command_serves_until_interrupted(setup):
    """`uniarm serve` as a process of its own: it says where it serves, answers, and exits cleanly on
    Ctrl-C (its compiled programs come from the suite's persistent cache)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.serve_setup import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uniarm_jax.commands.main", "serve", "--base", setup["base_dir"],
                             "--arm", setup["arm_dir"], "--port", str(port), "--slots", "4", *LIMITS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest"))  # as conftest: one cache key
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.ConnectError:
                time.sleep(0.2)
        res = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
            "model": "base+uniarm", "messages": [{"role": "user", "content": PROMPTS[2]}], "max_tokens": 4,
            "preference": [0.9, 0.1]})
        assert res.json()["choices"][0]["token_ids"] == offline(setup, PROMPTS[2], 4, [0.9, 0.1])
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"serving base+uniarm, base on http://127.0.0.1:{port}" in out


def test_an_int8_base_serves_what_offline_int8_decoding_gives(setup):
    """`--quantize int8`: the served base and its UniARM are the int8 models, answer for answer the
    offline guided decoding of `load_pretrained(..., quantize="int8")` with the adapter on it (and not
    the float models' answers, which int8 changes for at least one of these rows)."""
    from uniarm_jax.hf.adapter_files import load_adapter
    q8 = uniarm_jax.load_pretrained(setup["base_dir"], quantize="int8")
    arm = load_adapter(q8, setup["arm_dir"])
    tok = setup["tokenizer"]
    differs = False
    with running_server("--base", setup["base_dir"], "--arm", setup["arm_dir"], "--quantize", "int8", "--slots", 2,
                        *LIMITS) as (url, service):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        for prompt, pref in zip(PROMPTS[:4], PREFS):
            ids, _, _ = encode_prompt(tok, prompt, TokenizeConfig("chat", max_prompt_tokens=32, max_total_tokens=128))
            expected, _ = guided_generate(q8, [arm], [ids], 12, pref=pref, pad_id=tok.pad_token_id)
            messages = [{"role": "user", "content": prompt}]
            res = client.chat.completions.create(model=service.guided_id, messages=messages, max_tokens=12,
                                                 temperature=0, extra_body={"preference": pref})
            assert res.choices[0].model_extra["token_ids"] == expected[0]
            differs |= expected[0] != offline(setup, prompt, 12, pref)
    assert differs
