"""PEFT LoRA directories as ARMs, against peft itself: written by peft's `save_pretrained` on tiny random
Llamas (non-zero B), they give `peft.PeftModel`'s logits (max abs ≤ 1e-4, float32); guided by
`uniarm sample` and `uniarm evaluate` they give the greedy tokens of a PyTorch loop over the merged
model (`merge_and_unload`); `uniarm export` → PEFT → back in gives the same logits; what this project
does not support is refused by name."""

import json
import re
import shutil

import numpy as np
import peft
import pytest
import torch
import transformers

import uniarm_jax
from tests.cli_runner import run_uniarm
from tests.synthetic import vocabulary
from tests.test_adapters import CONFIGS, randomise
from tests.tiny_models import make_tiny_llama, make_tiny_word_llama
from uniarm_jax.data.tokenization import TokenizeConfig, encode_prompt
from uniarm_jax.errors import CheckpointError, ConfigError, MissingFileError
from uniarm_jax.hf.adapter_files import load_adapter, save_adapter
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter

HUB_ID = "meta-llama/Llama-2-7b-hf"  # as GenARM's TRL scripts record it: no such directory here


def make_peft(base_dir, out, seed=0, name_or_path=None, **lora):
    """A PEFT LoRA directory written by peft on `base_dir`, every LoRA weight random (B included),
    and the PeftModel (float32, eval) that wrote it."""
    model = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                peft.LoraConfig(**lora))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1)
    if name_or_path is not None:
        model.peft_config["default"].base_model_name_or_path = name_or_path
    model.save_pretrained(out)
    return model.eval()


def edit_config(peft_dir, **changes):
    path = peft_dir / "adapter_config.json"
    json.dump({**json.load(open(path)), **changes}, open(path, "w"))


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("peft_base")
    make_tiny_llama(path)
    return path


@pytest.fixture(scope="module")
def peft_dir(base_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("peft") / "lora"
    make_peft(base_dir, path, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    return path


CASES = {
    "list": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "rslora-all-linear": dict(r=4, lora_alpha=16, target_modules="all-linear", use_rslora=True),
    "regex": dict(r=2, lora_alpha=3, lora_dropout=0.05, target_modules=r".*\.(k_proj|o_proj|down_proj)"),
    "suffixes": dict(r=8, lora_alpha=16, target_modules=["mlp.gate_proj", "self_attn.o_proj", "up_proj"]),
}


@pytest.mark.parametrize("case", [*CASES, "fan-in-fan-out"])
def test_peft_lora_gives_peft_models_logits(base_dir, tmp_path, case):
    make_peft(base_dir, tmp_path / "arm", **CASES.get(case, CASES["list"]))
    if case == "fan-in-fan-out":  # as a GPT-2-style config says it; on a Llama's linear layers peft resets it
        edit_config(tmp_path / "arm", fan_in_fan_out=True)
    oracle = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(base_dir),
                                            str(tmp_path / "arm")).eval()
    arm = load_adapter(uniarm_jax.load_pretrained(str(base_dir)), str(tmp_path / "arm"))
    assert arm.adapter_config.kind == "lora" and arm.adapter_config.dropout == CASES.get(case, {}).get(
        "lora_dropout", 0.0)
    ids = np.random.RandomState(0).randint(0, 96, (2, 12))
    expected = torch_logits(oracle, ids)
    diff = np.abs(uniarm_jax.logits(arm, ids) - expected).max()
    assert diff <= 1e-4, f"{case}: max abs difference {diff}"
    with oracle.disable_adapter():
        assert np.abs(torch_logits(oracle, ids) - expected).max() > 0.1  # the adapter counts


def test_uniarm_export_to_peft_and_back_gives_the_same_logits(base_dir, tmp_path):
    base = uniarm_jax.load_pretrained(str(base_dir))
    ids = np.random.RandomState(1).randint(0, 96, (2, 10))
    for name, pref in (("lora", None), ("pblora", [0.7, 0.3]), ("moslora", [0.2, 0.8])):
        arm = randomise(init_adapter(base, CONFIGS[name]), seed=3)
        save_adapter(arm, str(tmp_path / name))
        res = run_uniarm("export", "--base", base_dir, "--adapter", tmp_path / name, "--out", tmp_path / f"{name}.peft",
                         *(["--pref", ",".join(map(str, pref))] if pref else []))
        assert res.returncode == 0, res.stderr
        if name == "moslora":  # its shift β(α) exports as PEFT's lora_bias, which a LoRA ARM lacks
            with pytest.raises(ConfigError, match="lora_bias=True is not supported; expected False or None"):
                load_adapter(base, str(tmp_path / f"{name}.peft"))
            continue
        again = load_adapter(base, str(tmp_path / f"{name}.peft"))
        diff = np.abs(uniarm_jax.logits(again, ids) - uniarm_jax.logits(arm, ids, pref=pref)).max()
        assert diff <= 1e-4, f"{name}: max abs difference {diff}"


# ------------------------------------------------------------------- guided decoding, against torch

def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def torch_guided_greedy(base, arms, weights, prompt, n, eos):
    """GenARM's rule in a plain PyTorch loop: every model's full forward at every step, float64 sums."""
    seq = list(prompt)
    for _ in range(n):
        logp = log_softmax(torch_logits(base, [seq])[0, -1].astype(np.float64))
        for w, arm in zip(weights, arms):
            logp = logp + w * log_softmax(torch_logits(arm, [seq])[0, -1].astype(np.float64))
        seq.append(int(np.argmax(logp)))
        if seq[-1] == eos:
            break
    return seq[len(prompt):]


@pytest.fixture(scope="module")
def genarm(tmp_path_factory):
    """A word-level base, a smaller weak base with the same tokenizer, and two PEFT ARMs on the weak one
    whose configs name a hub id as their base; the merged PyTorch ARMs."""
    root = tmp_path_factory.mktemp("peft_genarm")
    base = make_tiny_word_llama(root / "base", vocabulary(), num_hidden_layers=3)
    make_tiny_word_llama(root / "weak", vocabulary(), seed=7, hidden_size=32, intermediate_size=64,
                         num_attention_heads=2, num_key_value_heads=1)
    arms = [make_peft(root / "weak", root / f"arm{i}", seed=i, name_or_path=HUB_ID, r=4, lora_alpha=16,
                      target_modules=["q_proj", "k_proj", "v_proj", "down_proj"]) for i in range(2)]
    merged = [a.merge_and_unload().eval() for a in arms]
    with open(root / "prompts.jsonl", "w") as f:
        for p in ["Name some fruit.", "Say six words."]:
            f.write(json.dumps({"prompt": p}) + "\n")
    return root, base.eval(), merged


def test_sample_with_peft_arms_on_a_hub_base_equals_the_torch_loop(genarm, tmp_path):
    root, base, merged = genarm
    common = ["--base", root / "base", "--arm", root / "arm0", "--arm", root / "arm1", "--pref", "0.3,0.7",
              "--prompts", root / "prompts.jsonl", "--template", "raw", "--max-new-tokens", 6, "--no-progress"]
    res = run_uniarm("sample", *common, "--out", tmp_path / "o.jsonl")
    assert res.returncode == 2
    assert (f"ARM '{root / 'arm0'}' was trained on '{HUB_ID}', which is not here: '{HUB_ID}' does not exist (a hub "
            "id? nothing is downloaded); pass --arm-base DIR with that model") in res.stderr

    res = run_uniarm("sample", *common, "--arm-base", root / "weak", "--out", tmp_path / "o.jsonl")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in open(tmp_path / "o.jsonl")]
    eos = uniarm_jax.load_tokenizer(str(root / "base")).eos_token_id
    for row in rows:
        assert row["token_ids"] == torch_guided_greedy(base, merged, [0.3, 0.7], row["prompt_token_ids"], 6, eos)
    assert any(row["token_ids"] != torch_guided_greedy(base, [], [], row["prompt_token_ids"], 6, eos)
               for row in rows)  # the ARMs steer


def test_evaluate_takes_peft_arms_and_arm_base(genarm, tmp_path):
    root, base, merged = genarm
    config = {"base": str(root / "base"), "prompts": str(root / "prompts.jsonl"), "template": "raw",
              "objectives": ["brevity", "informativeness"], "reference": [0.0, 0.0], "prefs": [[0.3, 0.7]],
              "max_new_tokens": 5, "methods": {"genarm": {"arms": [str(root / "arm0"), str(root / "arm1")]}}}
    json.dump(config, open(tmp_path / "eval.yaml", "w"))
    res = run_uniarm("evaluate", tmp_path / "eval.yaml", f"out_dir={tmp_path / 'out'}", "--arm-base", root / "weak")
    assert res.returncode == 0, res.stderr
    tokenizer = uniarm_jax.load_tokenizer(str(root / "base"))
    rows = [json.loads(line) for line in open(tmp_path / "out" / "samples" / "genarm.jsonl")]
    assert len(rows) == 2
    for row in rows:
        ids, _, _ = encode_prompt(tokenizer, row["prompt"], TokenizeConfig(template="raw"))
        expected = torch_guided_greedy(base, merged, [0.3, 0.7], ids, 5, tokenizer.eos_token_id)
        assert row["text"] == tokenizer.decode(expected, skip_special_tokens=True).strip()


# --------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("changes, message", [
    (dict(peft_type="IA3"), "peft_type='IA3' is not supported; expected 'LORA' (a LoRA adapter)"),
    (dict(peft_type="PREFIX_TUNING"), "peft_type='PREFIX_TUNING' is not supported"),
    (dict(task_type="SEQ_CLS"), "task_type='SEQ_CLS' is not supported; an ARM is a causal LM"),
    (dict(use_dora=True), "use_dora=True is not supported; expected False or None"),
    (dict(bias="lora_only"), "bias='lora_only' is not supported; expected 'none' or None"),
    (dict(lora_bias=True), "lora_bias=True is not supported"),
    (dict(modules_to_save=["lm_head"]), "modules_to_save=['lm_head'] is not supported"),
    (dict(rank_pattern={"q_proj": 2}), "rank_pattern={'q_proj': 2} is not supported; expected None or {}"),
    (dict(alpha_pattern={"v_proj": 4}), "alpha_pattern={'v_proj': 4} is not supported"),
    (dict(layers_to_transform=[0]), "layers_to_transform=[0] is not supported"),
    (dict(trainable_token_indices=[5]), "trainable_token_indices=[5] is not supported"),
    (dict(init_lora_weights="pissa_niter_4"), "init_lora_weights='pissa_niter_4' is not supported: it changes the "
                                              "base weights too"),
    (dict(target_modules=["q_proj", "lm_head"]), "target module 'lm_head' is not supported; an ARM here adapts only "
                                                 "the projections ('q_proj', 'k_proj', 'v_proj', 'o_proj', "
                                                 "'gate_proj', 'up_proj', 'down_proj')"),
    (dict(target_modules=["embed_tokens"]), "target module 'embed_tokens' is not supported"),
    (dict(target_modules=r".*(q_proj|v_proj|lm_head)"), "adapts 'lm_head', which is not supported"),
    (dict(target_modules=r"model\.layers\.0\.self_attn\.(q|v)_proj"), "adapts q_proj in layers [0] of 2 only"),
    (dict(target_modules=["layers.1.self_attn.q_proj", "v_proj"]), "adapts q_proj in layers [1] of 2 only"),
    (dict(target_modules=None), "target_modules is missing"),
    (dict(r=0), "r=0; expected a positive integer"),
])
def test_unsupported_peft_config_is_refused_by_name(base_dir, peft_dir, tmp_path, changes, message):
    shutil.copytree(peft_dir, tmp_path / "arm")
    edit_config(tmp_path / "arm", **changes)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_adapter(uniarm_jax.load_pretrained(str(base_dir)), str(tmp_path / "arm"))


@pytest.mark.parametrize("lora, message", [
    (dict(use_dora=True), "use_dora=True is not supported"),
    (dict(bias="all"), "bias='all' is not supported"),
    (dict(modules_to_save=["lm_head"]), "modules_to_save=['lm_head'] is not supported"),
    (dict(target_modules=["q_proj", "embed_tokens"]), "target module 'embed_tokens' is not supported"),
])
def test_unsupported_features_peft_wrote_are_refused_by_name(base_dir, tmp_path, lora, message):
    make_peft(base_dir, tmp_path / "arm", **{"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], **lora})
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_adapter(uniarm_jax.load_pretrained(str(base_dir)), str(tmp_path / "arm"))


def test_peft_tensors_that_do_not_fit_the_base_are_refused(base_dir, peft_dir, tmp_path):
    make_tiny_llama(tmp_path / "wide", hidden_size=64)
    with pytest.raises(CheckpointError, match=r"tensor 'base_model\.model\.model\.layers\.0\.self_attn\.q_proj\."
                                              r"lora_A\.weight' has shape \(4, 48\); this base expects \(4, 64\)"):
        load_adapter(uniarm_jax.load_pretrained(str(tmp_path / "wide")), str(peft_dir))
    make_tiny_llama(tmp_path / "deeper", num_hidden_layers=3)
    with pytest.raises(CheckpointError, match=r"layers\.2\.self_attn\.q_proj\.lora_A\.weight' is missing"):
        load_adapter(uniarm_jax.load_pretrained(str(tmp_path / "deeper")), str(peft_dir))
    shutil.copytree(peft_dir, tmp_path / "arm")
    (tmp_path / "arm" / "adapter_model.safetensors").unlink()
    with pytest.raises(MissingFileError, match="has no adapter_model.safetensors"):
        load_adapter(uniarm_jax.load_pretrained(str(base_dir)), str(tmp_path / "arm"))
    meta = json.load(open(tmp_path / "arm" / "adapter_config.json"))
    json.dump({k: v for k, v in meta.items() if k != "peft_type"}, open(tmp_path / "arm" / "adapter_config.json", "w"))
    with pytest.raises(CheckpointError, match="has format None; expected 'uniarm_jax.adapter/2'"):
        load_adapter(uniarm_jax.load_pretrained(str(base_dir)), str(tmp_path / "arm"))


def test_a_lora_arm_adapter_config_is_what_peft_describes(base_dir, tmp_path):
    make_peft(base_dir, tmp_path / "arm", r=4, lora_alpha=8, target_modules=["v_proj", "q_proj"], use_rslora=True,
              lora_dropout=0.1)
    acfg = load_adapter(uniarm_jax.load_pretrained(str(base_dir)), str(tmp_path / "arm")).adapter_config
    assert acfg == AdapterConfig(kind="lora", targets=("q_proj", "v_proj"), rank=4, lora_alpha=8 * 2.0, dropout=0.1,
                                 num_objectives=1)
    assert acfg.scale == 8 / np.sqrt(4)  # rsLoRA: lora_alpha / √r
