"""Reward scorers per objective: the Flax llama_score against transformers' LlamaForSequenceClassification
(padded batches, both head names, the sign), hf_classifier against a direct torch call, the built-in
objectives by hand, and the errors (non-finite scores, missing directories, bad specs)."""

import json
import math
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers

from tests.tiny_models import TINY, make_word_tokenizer
from uniarm_jax.errors import CheckpointError, ConfigError
from uniarm_jax.eval.scoring import (
    Scorer,
    ScoringError,
    brevity,
    informativeness,
    make_scorer,
    make_scorers,
    score_responses,
    tone,
)

WORDS = "how do i bake bread cook rice answer you need flour water salt heat it slowly sure great thanks bad".split()
PROMPTS = ["how do i bake bread", "how do i cook rice", "how"]
RESPONSES = ["you need flour water salt heat it slowly sure thanks", "heat water", "great"]
FORMAT = "{prompt} answer {response}"


def _randomise(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("norm.weight") else 0.2 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def llama_score_dir(tmp_path_factory):
    """A random LlamaForSequenceClassification (2 labels) with a word tokenizer beside it."""
    path = tmp_path_factory.mktemp("llama_score")
    tok = make_word_tokenizer(path, WORDS)
    cfg = transformers.LlamaConfig(**{**TINY, "vocab_size": len(tok), "num_labels": 2, "pad_token_id": 0})
    model = _randomise(transformers.LlamaForSequenceClassification(cfg), seed=1)
    model.save_pretrained(path)
    return str(path), model, tok


def _hf_padded_scores(model, tok, texts):
    """transformers' pooled logits of one right-padded batch (its own last-non-pad pooling)."""
    ids = [tok(t)["input_ids"] for t in texts]
    length = max(map(len, ids))
    x = torch.tensor([r + [0] * (length - len(r)) for r in ids])
    mask = (x != 0).long()
    with torch.no_grad():
        return model(input_ids=x, attention_mask=mask).logits.numpy()


def _texts():
    return [FORMAT.replace("{prompt}", p).replace("{response}", r) for p, r in zip(PROMPTS, RESPONSES)]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_llama_score_matches_transformers(llama_score_dir, padding_side):
    path, model, tok = llama_score_dir
    ref = _hf_padded_scores(model, tok, _texts())
    for label in (0, 1):
        scorer = make_scorer({"kind": "llama_score", "path": path, "name": "helpful", "format": FORMAT,
                              "label_index": label, "batch_size": 2, "padding_side": padding_side})
        assert isinstance(scorer, Scorer) and scorer.name == "helpful"
        got = scorer(PROMPTS, RESPONSES)
        np.testing.assert_allclose(got, ref[:, label], atol=1e-4, rtol=0)
    assert len(set(np.round(ref[:, 0], 4))) == 3  # the rows really differ


def test_llama_score_head_variant_bias_and_sign(llama_score_dir, tmp_path):
    """safe-rlhf's naming: `score_head.weight` + bias, normaliser buffers beside it; a cost enters as −cost."""
    path, model, tok = llama_score_dir
    for fname in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{path}/{fname}", tmp_path / fname)
    state = safetensors.torch.load_file(f"{path}/model.safetensors")
    state["score_head.weight"] = state.pop("score.weight")
    bias = torch.tensor([0.75, -0.5])
    state["score_head.bias"] = bias
    state.update({"normalizer.mean": torch.zeros(2), "normalizer.var": torch.ones(2),
                  "normalizer.count": torch.zeros(1)})
    safetensors.torch.save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(tmp_path / "config.json"))
    json.dump({**cfg, "architectures": ["LlamaModelForScore"], "do_normalize": False},
              open(tmp_path / "config.json", "w"))

    ref = _hf_padded_scores(model, tok, _texts())[:, 1] + bias[1].item()
    scorer = make_scorer({"kind": "llama_score", "path": str(tmp_path), "format": FORMAT, "label_index": 1,
                          "sign": -1, "batch_size": 2})
    assert scorer.name == tmp_path.name
    np.testing.assert_allclose(scorer(PROMPTS, RESPONSES), -ref, atol=1e-4, rtol=0)

    json.dump({**cfg, "do_normalize": True}, open(tmp_path / "config.json", "w"))
    with pytest.raises(ConfigError, match="do_normalize"):
        make_scorer({"kind": "llama_score", "path": str(tmp_path)})


def test_llama_score_head_errors(llama_score_dir, tmp_path):
    path, _, _ = llama_score_dir
    with pytest.raises(ConfigError, match="no tensor 'reward.weight'"):
        make_scorer({"kind": "llama_score", "path": path, "head": "reward"})
    with pytest.raises(ConfigError, match="label_index=2 .* 2 output"):
        make_scorer({"kind": "llama_score", "path": path, "label_index": 2})
    shutil.copytree(path, tmp_path / "m")
    state = safetensors.torch.load_file(f"{path}/model.safetensors")
    state["model.extra.weight"] = torch.zeros(3)
    safetensors.torch.save_file(state, str(tmp_path / "m/model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.extra.weight'"):
        make_scorer({"kind": "llama_score", "path": str(tmp_path / "m")})


def test_hf_classifier_matches_direct_torch_call(tmp_path):
    tok = make_word_tokenizer(tmp_path, WORDS)
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                  num_labels=2, pad_token_id=tok.pad_token_id)
    model = _randomise(transformers.GPT2ForSequenceClassification(cfg), seed=2)
    model.save_pretrained(tmp_path)
    texts = _texts()
    with torch.no_grad():  # one text at a time: no padding at all
        ref = np.array([model(torch.tensor([tok(t)["input_ids"]])).logits[0].numpy() for t in texts])
    for label in (0, 1):
        scorer = make_scorer({"kind": "hf_classifier", "path": str(tmp_path), "name": "harmless", "format": FORMAT,
                              "label_index": label, "batch_size": 2})
        np.testing.assert_allclose(scorer(PROMPTS, RESPONSES), ref[:, label], atol=1e-5, rtol=0)
    neg = make_scorer({"kind": "hf_classifier", "path": str(tmp_path), "format": FORMAT, "sign": -1})
    np.testing.assert_allclose(neg(PROMPTS, RESPONSES), -ref[:, 0], atol=1e-5, rtol=0)


def test_programmatic_builtins_by_hand():
    assert brevity("q", "One two, three!", scale=3) == 0.5
    assert brevity("q", "") == 1.0
    # content words not in the prompt: small, furry, animal ("a", "is" are stopwords; "cat" is in the prompt)
    assert informativeness("What is a cat?", "A cat is a small furry animal.", scale=2) == pytest.approx(3 / 5)
    assert informativeness("q", "the the of") == 0.0
    assert tone("", "Great, thanks! This is bad.") == pytest.approx((2 - 1) / (3 + 1))
    assert tone("", "Paris is in France.") == 0.0
    scorer = make_scorer({"kind": "programmatic", "function": "brevity", "args": {"scale": 3}})
    assert scorer.name == "brevity"
    np.testing.assert_allclose(scorer(["q", "q"], ["a b c", "a"]), [0.5, 0.75])


def test_brevity_and_informativeness_trade_off():
    scorers = make_scorers([{"kind": "programmatic", "function": "brevity"},
                            {"kind": "programmatic", "function": "informativeness"}])
    short = "Paris."
    long = "Paris is the capital of France, a large European country known for art, food and history."
    s = score_responses(scorers, ["What is the capital of France?"] * 2, [short, long])
    assert s.shape == (2, 2)
    assert s[0, 0] > s[1, 0] and s[0, 1] < s[1, 1]  # neither response dominates the other


def user_objective(prompt, response, bonus=0.0):
    return len(response) + bonus


def nan_on_question(prompt, response):
    return math.nan if prompt.endswith("?") else 1.0


def test_user_function_by_import_path_and_nan_error():
    scorer = make_scorer({"kind": "programmatic", "function": "tests.test_scoring:user_objective",
                          "args": {"bonus": 0.5}})
    assert scorer.name == "user_objective"
    np.testing.assert_allclose(scorer(["p", "p"], ["ab", ""]), [2.5, 0.5])

    long_prompt = "Tell me, in as much detail as you can manage, how a sourdough starter works?"
    nanny = make_scorer({"kind": "programmatic", "function": "tests.test_scoring:nan_on_question", "name": "nanny"})
    with pytest.raises(ScoringError) as e:
        nanny(["fine", long_prompt], ["x", "y"])
    msg = str(e.value)
    assert "'nanny'" in msg and repr(long_prompt[:60] + "…") in msg and long_prompt not in msg

    class Raw:  # a protocol-only scorer: score_responses checks it all the same
        name = "raw"

        def __call__(self, prompts, responses):
            return np.array([0.0, np.inf])
    with pytest.raises(ScoringError, match=r"objective 'raw' scored inf for the response to prompt 'b'"):
        score_responses([Raw()], ["a", "b"], ["x", "y"])


@pytest.mark.parametrize("kind,what", [("hf_classifier", "reward model"), ("llama_score", "score model")])
def test_missing_directory(tmp_path, kind, what):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"{what} directory '{missing}' of objective 'safe' does not exist"):
        make_scorer({"kind": kind, "path": missing, "name": "safe"})


@pytest.mark.parametrize("spec,match", [
    ({"kind": "bleu"}, "kind='bleu' is not one of"),
    ({"kind": "programmatic", "function": "brevity", "scale": 3}, "unknown key 'scale'"),
    ({"kind": "programmatic", "function": "brevity", "sign": 2}, "sign=2; expected 1 or -1"),
    ({"kind": "programmatic", "function": "wordiness"}, "neither a built-in"),
    ({"kind": "programmatic", "function": "no_such_module_xyz:f"}, "could not be imported"),
    ({"kind": "hf_classifier", "path": "x", "format": "{prompt}"}, "holding {response}"),
    ({"kind": "hf_classifier", "path": "x", "batch_size": 0}, "batch_size=0"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        make_scorer(spec)


def test_mismatched_inputs_and_duplicate_names():
    scorer = make_scorer({"kind": "programmatic", "function": "tone"})
    with pytest.raises(ScoringError, match="2 prompts and 1 responses"):
        scorer(["a", "b"], ["x"])
    with pytest.raises(ConfigError, match="'tone' is given to more than one"):
        make_scorers([{"kind": "programmatic", "function": "tone"}] * 2)


def test_llama_score_truncation_keeps_the_end(llama_score_dir):
    """A text over max_length keeps its last tokens (this tokenizer adds no BOS)."""
    path, model, tok = llama_score_dir
    text = _texts()[0]
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        ref = model(torch.tensor([ids[-5:]])).logits[0, 0].item()
    scorer = make_scorer({"kind": "llama_score", "path": path, "format": FORMAT, "max_length": 5, "batch_size": 1})
    np.testing.assert_allclose(scorer(PROMPTS[:1], RESPONSES[:1]), [ref], atol=1e-4, rtol=0)
