"""Tiny random Llamas saved with transformers' `save_pretrained`: the oracle models of the tests."""

import copy

import torch
import transformers

TINY = dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)


def make_tiny_llama(path, seed: int = 0, dtype=torch.float32, **overrides) -> transformers.LlamaForCausalLM:
    """Saves a random LlamaForCausalLM to `path` and returns it (float32, eval mode). Every weight,
    norms included, is random, so a swapped or untransposed tensor cannot go unnoticed."""
    cfg = transformers.LlamaConfig(**{**TINY, **overrides})
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    saved = copy.deepcopy(model).to(dtype)
    saved.save_pretrained(path)
    with torch.no_grad():  # the oracle computes in float32 with the weights as saved (rounded)
        for p, q in zip(model.parameters(), saved.parameters()):
            p.copy_(q.float())
    return model


def make_tiny_llama_with_tokenizer(path, tokenizer_dir, **overrides) -> transformers.LlamaForCausalLM:
    """A tiny random Llama over a real tokenizer's vocabulary (the tokenizer files copied beside it),
    for tests that need text: data, training, decoding."""
    import shutil

    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    model = make_tiny_llama(path, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            tie_word_embeddings=True, **overrides)
    tokenizer.save_pretrained(path)
    return model
