"""The KV cache against the full forward (the oracle): prefill of a left-padded batch, then one token
per step, gives the full forward's logits at the same positions; greedy through the cache equals an
argmax rollout that recomputes the full forward every step."""

import jax
import jax.numpy as jnp
import numpy as np

import uniarm_jax
from uniarm_jax.decode.generate import generate_ids
from uniarm_jax.decode.rollout import left_pad
from uniarm_jax.model.llama import Llama, init_cache


def test_prefill_then_decode_equals_full_forward(tiny_dir):
    handle = uniarm_jax.load_pretrained(tiny_dir)
    cfg, model = handle.config, Llama(handle.config)
    rng = np.random.RandomState(0)
    lengths, steps, bucket = [9, 4, 1], 6, 10
    rows = [list(rng.randint(3, 96, n + steps)) for n in lengths]  # prompt + continuation, per row

    ids, mask = left_pad([r[:n] for r, n in zip(rows, lengths)], bucket, pad_id=0)
    cache = init_cache(cfg, len(rows), bucket + steps)
    step = jax.jit(lambda p, c, i, m: model.apply({"params": p, "cache": c}, i, m, mutable=["cache"]))
    logits, state = step(handle.params, cache, jnp.asarray(ids), jnp.asarray(mask))
    cached = [np.asarray(logits)]
    for t in range(steps):
        token = np.array([[r[n + t]] for r, n in zip(rows, lengths)], np.int32)
        logits, state = step(handle.params, state["cache"], jnp.asarray(token), jnp.ones((3, 1), jnp.int32))
        cached.append(np.asarray(logits))
    cached = np.concatenate(cached, axis=1)  # [batch, bucket + steps, vocab]

    for row, (r, n) in enumerate(zip(rows, lengths)):
        full = uniarm_jax.logits(handle, np.array([r]))[0]  # the row alone, unpadded
        ours = cached[row, bucket - n:]  # its real positions: the prompt, then every decode step
        diff = np.abs(ours - full).max()
        assert diff <= 1e-5, f"row {row} (prompt {n}): cached vs full forward differ by {diff}"
    assert int(state["cache"]["index"]) == bucket + steps
    np.testing.assert_array_equal(np.asarray(state["cache"]["seen"]), np.array(lengths) + steps)


def naive_greedy(handle, prompt, n, width=32):
    """Full forward at every step. Right-padding to a fixed width (causal: the padding cannot reach
    earlier positions) keeps it to one compilation."""
    seq = list(prompt)
    for _ in range(n):
        padded = np.array([seq + [0] * (width - len(seq))])
        nxt = int(np.argmax(uniarm_jax.logits(handle, padded)[0, len(seq) - 1]))
        seq.append(nxt)
        if nxt in handle.config.eos_token_ids:
            break
    return seq[len(prompt):]


def test_greedy_rollout_equals_recomputed_argmax(tiny_dir):
    handle = uniarm_jax.load_pretrained(tiny_dir)
    handle.config = handle.config.replace(eos_token_id=None)  # run the full length on every row
    prompts = [[5, 17, 33, 8, 60, 21, 9], [44, 3], [70, 12, 90, 15]]
    ours = generate_ids(handle, prompts, max_new_tokens=8)
    for prompt, got in zip(prompts, ours):
        assert got == naive_greedy(handle, prompt, 8)


def test_rollout_stops_rows_at_eos(tiny_dir):
    """A row that emits EOS ends there (EOS kept); the others go on."""
    handle = uniarm_jax.load_pretrained(tiny_dir)
    prompts = [[5, 17, 33, 8], [44, 3, 7]]
    free = generate_ids(handle.__class__(handle.config.replace(eos_token_id=None), handle.params), prompts, 8)
    eos = free[0][2]  # pretend the third token of row 0 is the end-of-sequence token
    handle.config = handle.config.replace(eos_token_id=int(eos))
    stopped = generate_ids(handle, prompts, 8)
    for row, toks in enumerate(free):
        expect = toks[: toks.index(eos) + 1] if eos in toks else toks
        assert stopped[row] == expect
