"""The ARM objectives against oracles: response log-probs against transformers' PyTorch Llama on the
same tokens, and every loss against a numpy computation on the same log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import uniarm_jax
from tests.pairs import random_pairs
from tests.tiny_models import make_tiny_llama
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.llama import Llama
from uniarm_jax.train import losses
from uniarm_jax.train.losses import (
    ObjectiveConfig,
    model_distil_fn,
    model_logprob_fn,
    objective_loss,
    sample_dirichlet,
    weighted_winner,
)

B, K = 4, 2


def make_batch(k=K, seed=0, with_scores=False):
    return random_pairs(B, k, seed, with_scores=with_scores)[0]


# A log-prob function numpy can replay: it depends on the scored tokens and, through `pref`, on α.
WEIGHTS = np.array([0.7, -1.3, 0.4])


def fake_logprob_fn(rows, pref):
    base = -0.05 * jnp.sum(rows["target_ids"] * rows["target_mask"], axis=-1)  # [N, 2]
    if pref is None:
        return base
    return base * (1.0 + pref @ jnp.asarray(WEIGHTS[: pref.shape[-1]], jnp.float32))[:, None]


def numpy_lp(batch, pref):
    """[B, 2] log-probs under per-example pref [B, k] (or None)."""
    base = -0.05 * np.sum(batch["target_ids"] * batch["target_mask"], axis=-1).astype(np.float64)
    return base if pref is None else base * (1.0 + pref @ WEIGHTS[: pref.shape[-1]])[:, None]


def np_bt(margin, beta):
    return np.log1p(np.exp(-beta * margin))


def np_margins(lp, labels):
    """[B, k]: preferred minus other response log-prob."""
    win = np.take_along_axis(lp, labels, axis=1)
    lose = np.take_along_axis(lp, 1 - labels, axis=1)
    return win - lose


def run(cfg, batch, seed=0):
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    loss, metrics = jax.jit(lambda b, r: objective_loss(fake_logprob_fn, b, r, cfg))(jbatch, jax.random.key(seed))
    return float(loss), jax.tree.map(np.asarray, metrics)


@pytest.mark.parametrize("objective", [0, 1])
def test_genarm_loss_equals_numpy(objective):
    cfg = ObjectiveConfig(method="genarm", betas=(0.5, 0.01), objective=objective)
    batch = make_batch()
    loss, metrics = run(cfg, batch)
    margins = np_margins(numpy_lp(batch, None), batch["labels"])
    assert loss == pytest.approx(np.mean(np_bt(margins[:, objective], cfg.betas[objective])), rel=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(margins > 0, axis=0))
    np.testing.assert_allclose(metrics["margin"], np.mean(np.array(cfg.betas) * margins, axis=0), rtol=1e-5)


def test_parm_loss_equals_numpy_with_one_alpha_per_micro_batch():
    cfg = ObjectiveConfig(method="parm", betas=(0.5, 0.01))
    batch = make_batch(seed=1)
    loss, _ = run(cfg, batch, seed=3)
    alpha = np.asarray(sample_dirichlet(jax.random.key(3), 0.5, K))
    margins = np_margins(numpy_lp(batch, np.tile(alpha, (B, 1))), batch["labels"])
    per_objective = np.mean(np_bt(margins, np.array(cfg.betas)), axis=0)
    assert loss == pytest.approx(float(alpha @ per_objective), rel=1e-5)


@pytest.mark.parametrize("k", [2, 3])
def test_uniarm_dim_global_equals_numpy(k):
    betas = (0.5, 0.01, 0.1)[:k]
    cfg = ObjectiveConfig(method="uniarm", betas=betas, lambda_dim=0.7, lambda_glob=1.3, concentration=0.8,
                         reading="dim_global")
    batch = make_batch(k=k, seed=2)
    loss, metrics = run(cfg, batch, seed=5)
    alpha = np.asarray(sample_dirichlet(jax.random.key(5), 0.8, k, (B,)))
    l_dim = np.mean([np.mean(np_bt(np_margins(numpy_lp(batch, np.tile(np.eye(k)[i], (B, 1))), batch["labels"])[:, i],
                                   betas[i])) for i in range(k)])
    margins = np_margins(numpy_lp(batch, alpha), batch["labels"])
    l_glob = np.mean(np.sum(alpha * np_bt(margins, np.array(betas)), axis=-1))
    assert float(metrics["loss_dim"]) == pytest.approx(l_dim, rel=1e-5)
    assert float(metrics["loss_glob"]) == pytest.approx(l_glob, rel=1e-5)
    assert loss == pytest.approx(0.7 * l_dim + 1.3 * l_glob, rel=1e-5)


@pytest.mark.parametrize("with_scores", [False, True])
def test_uniarm_weighted_vote_equals_numpy(with_scores):
    betas = (0.5, 0.01)
    cfg = ObjectiveConfig(method="uniarm", betas=betas, reading="weighted_vote")
    batch = make_batch(seed=4, with_scores=with_scores)
    loss, metrics = run(cfg, batch, seed=6)
    alpha = np.asarray(sample_dirichlet(jax.random.key(6), 0.5, K, (B,)))
    lp = numpy_lp(batch, alpha)
    l_dim = np.mean(np.sum(alpha * np_bt(np_margins(lp, batch["labels"]), np.array(betas)), axis=-1))
    terms = []
    for b in range(B):
        if with_scores:
            value = batch["scores"][b] @ alpha[b]
        else:
            value = np.array([alpha[b][batch["labels"][b] == j].sum() for j in (0, 1)])
        if value[0] == value[1]:
            continue
        w = int(value[1] > value[0])
        terms.append(np_bt(lp[b, w] - lp[b, 1 - w], alpha[b] @ np.array(betas)))
    assert float(metrics["loss_dim"]) == pytest.approx(l_dim, rel=1e-5)
    assert float(metrics["loss_glob"]) == pytest.approx(np.mean(terms), rel=1e-5)
    assert loss == pytest.approx(l_dim + np.mean(terms), rel=1e-5)


def test_distil_loss_is_numpy_nats_per_response_token():
    batch = make_batch()
    tokens = batch["target_mask"].sum()
    assert 0 < tokens < batch["target_mask"].size  # the padding of short responses is left out
    loss, metrics = run(ObjectiveConfig(method="distil"), batch)
    expected = -numpy_lp(batch, None).sum() / tokens
    assert loss == pytest.approx(expected, rel=1e-6) and metrics["nats_per_token"] == pytest.approx(expected, rel=1e-6)
    flipped = dict(batch, labels=1 - batch["labels"])  # labels are not read
    assert run(ObjectiveConfig(method="distil"), flipped)[0] == loss


@pytest.mark.parametrize("method", ["genarm", "parm", "uniarm"])
def test_the_anchor_adds_the_scored_responses_nll_per_token(method):
    """`anchor` adds its weight × the negative log-prob per token of every response each method
    scored (UniARM dim_global: under all k + 1 conditionings), times the pair loss's number of
    one-objective terms (UniARM's L_dim and L_glob: 2 at λ_dim = λ_glob = 1; here 0.5 + 1); at 0 the
    loss is the paper's exactly."""
    batch = make_batch(seed=7)
    plain, metrics = run(ObjectiveConfig(method=method, betas=(0.5, 0.01), lambda_dim=0.5), batch, seed=8)
    anchored, _ = run(ObjectiveConfig(method=method, betas=(0.5, 0.01), lambda_dim=0.5, anchor=0.3), batch, seed=8)
    tokens = batch["target_mask"].sum()
    if method == "genarm":
        prefs = [None]
    elif method == "parm":
        prefs = [np.tile(np.asarray(sample_dirichlet(jax.random.key(8), 0.5, K)), (B, 1))]
    else:
        prefs = [np.tile(np.eye(K)[i], (B, 1)) for i in range(K)] + [
            np.asarray(sample_dirichlet(jax.random.key(8), 0.5, K, (B,)))]
    nll = -sum(numpy_lp(batch, p).sum() for p in prefs) / (tokens * len(prefs))
    assert float(metrics["nll_per_token"]) == pytest.approx(nll, rel=1e-5)
    terms = 1.5 if method == "uniarm" else 1.0
    assert anchored == pytest.approx(plain + 0.3 * terms * nll, rel=1e-5)
    with pytest.raises(ConfigError, match="objective.anchor=-1.0; expected a weight of at least 0"):
        ObjectiveConfig(anchor=-1.0)
    with pytest.raises(ConfigError, match="objective.anchor is read by the pair losses"):
        ObjectiveConfig(method="distil", anchor=1.0)


def test_weighted_winner_by_hand():
    labels = jnp.array([[0, 1], [0, 0], [1, 0], [0, 1]])
    scores = jnp.full((4, 2, 2), jnp.nan).at[3].set(jnp.array([[1.0, -2.0], [0.0, 0.0]]))
    alpha = jnp.array([[0.7, 0.3], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    winner, keep = weighted_winner(labels, scores, alpha)
    # row 0: vote 0.7 for response 0; row 1: both labels say 0; row 2: a tie, dropped;
    # row 3: scores 0.5*1 + 0.5*(-2) = -0.5 against 0: response 1 wins
    assert np.asarray(winner).tolist()[:2] == [0, 0] and int(winner[3]) == 1
    assert np.asarray(keep).tolist() == [1.0, 1.0, 0.0, 1.0]


def test_dirichlet_draws_are_reproducible_from_the_seed():
    a = np.asarray(sample_dirichlet(jax.random.key(11), 0.5, 3, (5000,)))
    b = np.asarray(sample_dirichlet(jax.random.key(11), 0.5, 3, (5000,)))
    c = np.asarray(sample_dirichlet(jax.random.key(12), 0.5, 3, (5000,)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    assert (a >= 0).all()
    np.testing.assert_allclose(a.mean(0), 1 / 3, atol=0.02)  # Dirichlet(0.5·1) has mean 1/k


@pytest.mark.parametrize("chunked", [False, True])
def test_response_logprobs_match_transformers(tmp_path, monkeypatch, chunked):
    """Packed rows (prompt once, both responses after it) give each response the log-prob transformers
    gives it in a sequence of its own (float32, |diff| ≤ 1e-4 on sums of ~10 log-probs); also when
    the head runs chunk by chunk (16 positions a chunk here, under jax.checkpoint)."""
    if chunked:
        monkeypatch.setattr(losses, "SCORE_CHUNK_ELEMENTS", 1)
    oracle = make_tiny_llama(tmp_path)
    handle = uniarm_jax.load_pretrained(str(tmp_path))
    # rows and targets padded (40 tokens, 12 targets a response: 24 scored positions, 2 chunks of 16)
    batch, pairs = random_pairs(B, K, seed=7, response_len=(1, 12), length=40, response_length=12)
    fn = model_logprob_fn(Llama(handle.config), {"params": handle.params})
    rows = {k: jnp.asarray(batch[k]) for k in losses.ROW_KEYS}
    ours = np.asarray(jax.jit(fn)(rows, None))
    ref = np.zeros((B, 2))
    for b, (seqs, p) in enumerate(zip(pairs["sequences"], pairs["prompt_lens"])):
        for j, seq in enumerate(seqs):
            ids = torch.tensor(seq[None], dtype=torch.long)
            with torch.no_grad():
                logp = torch.log_softmax(oracle(ids).logits.double(), -1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0]
            ref[b, j] = logp[p - 1:].sum().item()
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_bad_objective_config_is_refused():
    with pytest.raises(ConfigError, match=r"objective method 'dpo' is not one of"):
        ObjectiveConfig(method="dpo")
    with pytest.raises(ConfigError, match=r"betas \[0.5, 0.0\] must be positive"):
        ObjectiveConfig(betas=(0.5, 0.0))
    with pytest.raises(ConfigError, match="UniARM loss reading 'vote' is not one of"):
        ObjectiveConfig(reading="vote")


@pytest.mark.parametrize("chunked", [False, True])
def test_distillation_from_a_teacher_matches_transformers(tmp_path, monkeypatch, chunked):
    """Token-level distillation: each response's log-prob and summed KL(teacher ‖ student) over its
    tokens equal transformers' for the two models on each sequence alone (float64 oracle; |diff| ≤ 1e-4
    on sums of ~10 terms in float32), also chunk by chunk; the loss is the KL per response token and
    `nats_per_token` the student's negative log-prob per token."""
    if chunked:
        monkeypatch.setattr(losses, "SCORE_CHUNK_ELEMENTS", 1)
    student_oracle = make_tiny_llama(tmp_path / "student", seed=0)
    teacher_oracle = make_tiny_llama(tmp_path / "teacher", seed=1, num_hidden_layers=3)
    student = uniarm_jax.load_pretrained(str(tmp_path / "student"))
    teacher = uniarm_jax.load_pretrained(str(tmp_path / "teacher"))
    batch, pairs = random_pairs(B, K, seed=9, response_len=(1, 12), length=40, response_length=12)
    fn = model_distil_fn(Llama(student.config), {"params": student.params}, Llama(teacher.config), teacher.params)
    rows = {k: jnp.asarray(batch[k]) for k in losses.ROW_KEYS}
    lp, kl = map(np.asarray, jax.jit(fn)(rows, None))
    ref_lp, ref_kl = np.zeros((B, 2)), np.zeros((B, 2))
    for b, (seqs, p) in enumerate(zip(pairs["sequences"], pairs["prompt_lens"])):
        for j, seq in enumerate(seqs):
            ids = torch.tensor(seq[None], dtype=torch.long)
            with torch.no_grad():
                s_logp = torch.log_softmax(student_oracle(ids).logits.double(), -1)[0, p - 1:-1]
                t_logp = torch.log_softmax(teacher_oracle(ids).logits.double(), -1)[0, p - 1:-1]
            ref_lp[b, j] = s_logp.gather(-1, ids[0, p:, None]).sum().item()
            ref_kl[b, j] = (t_logp.exp() * (t_logp - s_logp)).sum().item()
    np.testing.assert_allclose(lp, ref_lp, atol=1e-4)
    np.testing.assert_allclose(kl, ref_kl, atol=1e-4)
    assert (ref_kl > 0.1).all()  # two different models: every response's KL is far from zero
    tokens = batch["target_mask"].sum()
    loss, metrics = objective_loss(fn, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.key(0),
                                   ObjectiveConfig(method="distil", teacher=str(tmp_path / "teacher")))
    assert float(loss) == pytest.approx(ref_kl.sum() / tokens, rel=1e-5)
    assert float(metrics["kl_per_token"]) == float(loss)
    assert float(metrics["nats_per_token"]) == pytest.approx(-ref_lp.sum() / tokens, rel=1e-5)


def test_a_teacher_is_read_by_distil_only():
    with pytest.raises(ConfigError, match="objective.teacher is read by method 'distil' only; method is 'genarm'"):
        ObjectiveConfig(method="genarm", teacher="/some/model")
