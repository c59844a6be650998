"""The decode engine's compiled program, read as XLA compiled it: each step of the rollout writes one
slot of each layer's cache in place and never copies a cache. With the layer `nn.scan` and its
stacked cache (the code before the engine) XLA:CPU copied the whole `[layers, batch, slots, kv, d]`
cache 3 times per step for the base alone and 8 times with one ARM (4 layers); this test failed there
(it was run against that code). With per-layer caches laid out `[batch, slots, kv, d]`, XLA transposed
each layer's cache for attention at every step; the test reads every order of the cache's dims, and
failed there too."""

import itertools
import re

import jax
import jax.numpy as jnp
import pytest

import uniarm_jax
from tests.tiny_models import FAMILIES, make_tiny_llama
from uniarm_jax.decode import engine
from uniarm_jax.decode.rollout import _Plan, _rollout
from uniarm_jax.decode.sampling import Sampler
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter

BATCH, PROMPT, NEW = 2, 32, 16


@pytest.fixture(scope="module", params=["llama", "mistral-window-6", "qwen3-attention-bias"])
def models(request, tmp_path_factory):
    """Also a family with a window (its mask term) and one with biases and q/k norms."""
    path = tmp_path_factory.mktemp("engine") / "base"
    make_tiny_llama(path, num_hidden_layers=4, **FAMILIES[request.param])
    base = uniarm_jax.load_pretrained(str(path))
    return base, init_adapter(base, AdapterConfig(kind="moslora", num_objectives=2))


def compiled_rollout(base, guides) -> str:
    plan = _Plan(base.config, tuple((g.config, g.adapter_config) for g in guides), Sampler(), NEW, (2,), 0, 1.0)
    ids = jnp.ones((BATCH, PROMPT), jnp.int32)
    pref = jnp.full((BATCH, 2), 0.5) if guides else None
    return _rollout.lower(engine.decode_weights(base), tuple(engine.decode_weights(g) for g in guides), ids, ids,
                          pref, jnp.ones((BATCH, len(guides))), jax.random.key(0), plan=plan).compile().as_text()


def loop_computations(hlo: str) -> dict[str, list[str]]:
    """The computations the decode loop runs (its body and condition, and everything they call), by
    name. The decode loop is the `while` XLA cannot count (it stops at EOS); the prefill's scan over the
    layers is a `while` with a known trip count, and runs once."""
    comps, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"(?:ENTRY )?%?([\w.\-]+) ", line)
        if head and not line.startswith(" ") and line.rstrip().endswith("{"):
            name = head.group(1)
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    calls = {n: set(re.findall(r"(?:body|condition|calls|to_apply)=%?([\w.\-]+)", "\n".join(body)))
             for n, body in comps.items()}
    todo = [c for body in comps.values() for line in body if " while(" in line and "known_trip_count" not in line
            for c in re.findall(r"(?:body|condition)=%?([\w.\-]+)", line)]
    seen = set()
    while todo:
        c = todo.pop()
        if c not in seen and c in comps:
            seen.add(c)
            todo += calls[c]
    return {c: comps[c] for c in seen}


@pytest.mark.parametrize("with_arm", [False, True], ids=["base", "base+arm"])
def test_no_cache_is_copied_in_the_decode_loop(models, with_arm):
    base, arm = models
    cfg = base.config
    hlo = compiled_rollout(base, [arm] if with_arm else [])
    # a cache's dims in any order: a transposed copy of a layer's cache is a copy too (the cache laid
    # out [batch, slots, kv, d] made XLA transpose every layer's cache for attention at every step)
    dims = "|".join(",".join(map(str, p)) for p in
                    set(itertools.permutations((BATCH, PROMPT + NEW, cfg.num_key_value_heads, cfg.head_dim))))
    cache_shape = re.compile(rf"= f32\[(?:{cfg.num_hidden_layers},)?(?:{dims})\]\{{[^}}]*\}} (\w[\w\-]*)\(")
    loop = loop_computations(hlo)
    assert loop, "found no while loop in the compiled rollout"
    ops = [m.group(1) for body in loop.values() for line in body if (m := cache_shape.search(line))]
    assert "copy" not in ops, f"cache-sized copies in the decode loop: {ops.count('copy')}"
    # every cache-shaped value the loop makes is a slot written in place (a dynamic-update-slice, alone
    # or fused: XLA updates such a fusion's operand buffer in place), never a cache-sized computation
    made = {op for op in ops if op not in ("parameter", "get-tuple-element", "tuple", "bitcast")}
    assert made <= {"fusion", "dynamic-update-slice"}, made
    writes = [line for body in loop.values() for line in body
              if (m := cache_shape.search(line)) and m.group(1) == "fusion"]
    assert writes and all("dynamic-update-slice_fusion" in line for line in writes), writes
