"""Tiny random Llama-family models saved with transformers' `save_pretrained`: the oracle models of the
tests."""

import copy

import torch
import transformers

TINY = dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)


# One tiny model of each Llama-family architecture, as `make_tiny_llama` overrides: each feature that
# sets a family apart switched on (a window shorter than the tests' sequences, biases, per-head q/k norms).
FAMILIES = {
    "llama": dict(),
    "mistral-window-6": dict(model_type="mistral", sliding_window=6),
    "qwen2-untied": dict(model_type="qwen2"),
    "qwen2-tied": dict(model_type="qwen2", tie_word_embeddings=True),
    "qwen3-attention-bias": dict(model_type="qwen3", attention_bias=True),
}


def make_tiny_llama(path, seed: int = 0, dtype=torch.float32, model_type: str = "llama",
                    **overrides) -> transformers.PreTrainedModel:
    """Saves a random causal LM of `model_type` (llama, mistral, qwen2, qwen3: transformers' own class)
    to `path` and returns it (float32, eval mode). Every weight, norms and biases included, is random,
    so a swapped, untransposed or ignored tensor cannot go unnoticed."""
    cfg = transformers.AutoConfig.for_model(model_type, **{**TINY, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
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


def make_word_tokenizer(path, words) -> transformers.PreTrainedTokenizerFast:
    """A real (fast, word-level) tokenizer over a few words: small vocabularies keep the logits of
    training and decoding tests tiny."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(words) - set(specials)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                                     pad_token="<pad>", unk_token="<unk>")
    tokenizer.save_pretrained(path)
    return tokenizer


def make_tiny_word_llama(path, words, **overrides) -> transformers.LlamaForCausalLM:
    """A tiny random Llama with a word-level tokenizer beside it (vocabulary: the words + 4 specials)."""
    tokenizer = make_word_tokenizer(path, words)
    model = make_tiny_llama(path, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            **overrides)
    tokenizer.save_pretrained(path)
    return model
