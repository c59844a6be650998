"""The KV cache against the full forward (the oracle): prefill of a left-padded batch, then one token
per step, gives the full forward's logits at the same positions; greedy through the cache equals an
argmax rollout that recomputes the full forward every step."""

import jax
import jax.numpy as jnp
import numpy as np

import uniarm_jax
from uniarm_jax.decode import engine
from uniarm_jax.decode.generate import generate_ids
from uniarm_jax.decode.rollout import left_pad


def test_prefill_then_decode_equals_full_forward(family_dir):
    """The engine returns each row's last logits: after the prefill (the prompt's last position) and
    after every decode step; each must equal the full forward of the row alone at that position. Per
    family: Mistral's window (6) is shorter than the longest row (15 tokens in 16 slots)."""
    handle = uniarm_jax.load_pretrained(family_dir)
    cfg, weights = handle.config, engine.decode_weights(handle)
    rng = np.random.RandomState(0)
    lengths, steps, bucket = [9, 4, 1], 6, 10
    rows = [list(rng.randint(3, 96, n + steps)) for n in lengths]  # prompt + continuation, per row

    ids, mask = left_pad([r[:n] for r, n in zip(rows, lengths)], bucket, pad_id=0)
    step = jax.jit(lambda w, c, i, m: engine.forward(cfg, None, w, c, i, m))
    logits, cache = step(weights, engine.init_cache(cfg, len(rows), bucket + steps), jnp.asarray(ids),
                         jnp.asarray(mask))
    cached = [np.asarray(logits)]
    for t in range(steps):
        token = np.array([[r[n + t]] for r, n in zip(rows, lengths)], np.int32)
        logits, cache = step(weights, cache, jnp.asarray(token), jnp.ones((3, 1), jnp.int32))
        cached.append(np.asarray(logits))
    cached = np.stack(cached, axis=1)  # [batch, 1 + steps, vocab]: positions n - 1, ..., n - 1 + steps

    for row, (r, n) in enumerate(zip(rows, lengths)):
        full = uniarm_jax.logits(handle, np.array([r]))[0]  # the row alone, unpadded
        diff = np.abs(cached[row] - full[n - 1:n + steps]).max()
        assert diff <= 1e-5, f"row {row} (prompt {n}): cached vs full forward differ by {diff}"
    assert int(cache["index"]) == bucket + steps
    np.testing.assert_array_equal(np.asarray(cache["seen"]), np.array(lengths) + steps)


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


def test_greedy_rollout_equals_recomputed_argmax(family_dir):
    handle = uniarm_jax.load_pretrained(family_dir)
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
