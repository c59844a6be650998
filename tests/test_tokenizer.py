"""`load_tokenizer` reads `tokenizer.json` directly (hf/tokenizer.py) where transformers would use it as is:
the oracle is transformers' own `AutoTokenizer` on the same directory, compared id for id, text for
text and template for template; directories transformers adjusts still get `AutoTokenizer`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tests.tiny_models import make_word_tokenizer
from uniarm_jax.hf.pretrained import load_tokenizer
from uniarm_jax.hf.tokenizer import Tokenizer

TEXTS = ["", "Hello, world!", "  two  spaces and a\ttab\nnew line", "héllo wörld — ünïcode ✓ 日本語",
         "<|im_start|>user\nspecial tokens inside text<|im_end|>", "<s> a </s> b <pad>", "1234567 + 89 = ?",
         "what is the capital of France"]
MESSAGES = [[{"role": "user", "content": "Hi there"}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"},
             {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3 + 3?"}]]


def byte_bpe_dir(path):
    """A byte-level BPE with merges, special tokens, a BOS-adding post-processor and a chat template that
    uses the named special tokens, saved by transformers as a user's fine-tuned model would be."""
    from tokenizers import Tokenizer as Core
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    core = Core(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(TEXTS * 20 + ["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}"
                          "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    fast.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=["smollm2", "byte_bpe", "word_level"])
def tokenizer_dir(request, tmp_path_factory):
    if request.param == "smollm2":
        return request.getfixturevalue("smollm2_dir")
    path = tmp_path_factory.mktemp(request.param)
    if request.param == "byte_bpe":
        return byte_bpe_dir(path)
    make_word_tokenizer(path, "what is the capital of France a b".split())
    return str(path)


def test_reads_tokenizer_json_with_transformers_ids_texts_and_templates(tokenizer_dir):
    ours, oracle = load_tokenizer(tokenizer_dir), AutoTokenizer.from_pretrained(tokenizer_dir)
    assert isinstance(ours, Tokenizer)  # the fast path was taken for these directories
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(ours, name) == getattr(oracle, name), name
        assert getattr(ours, f"{name}_id") == getattr(oracle, f"{name}_id"), name
    assert ours.get_vocab() == oracle.get_vocab() and len(ours) == len(oracle)
    for special in (False, True):
        assert ours(TEXTS, add_special_tokens=special)["input_ids"] == \
            oracle(TEXTS, add_special_tokens=special)["input_ids"]
        for text in TEXTS:
            ids = ours(text, add_special_tokens=special)["input_ids"]
            assert ids == oracle(text, add_special_tokens=special)["input_ids"], text
            for skip in (False, True):
                assert ours.decode(ids, skip_special_tokens=skip) == oracle.decode(ids, skip_special_tokens=skip)
    every_id = list(range(len(oracle)))
    for skip in (False, True):
        assert ours.decode(every_id, skip_special_tokens=skip) == oracle.decode(every_id, skip_special_tokens=skip)
    assert bool(ours.chat_template) == bool(oracle.chat_template)
    if oracle.chat_template:
        for messages in MESSAGES:
            for generation in (False, True):
                assert ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation) == \
                    oracle.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
                assert ours.apply_chat_template(messages, add_generation_prompt=generation)["input_ids"] == \
                    list(oracle.apply_chat_template(messages, add_generation_prompt=generation)["input_ids"])
                assert ours.apply_chat_template(messages, return_dict=False) == \
                    list(oracle.apply_chat_template(messages, return_dict=False))


def test_a_directory_transformers_adjusts_gets_transformers_tokenizer(tmp_path):
    """A model-specific class, a flag under which transformers changes the loaded tokenizer, or no
    tokenizer.json: AutoTokenizer, so nothing differs from transformers' behaviour."""
    path = byte_bpe_dir(tmp_path / "base")
    config_path = tmp_path / "base" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    assert isinstance(load_tokenizer(path), Tokenizer)
    for change in ({"tokenizer_class": "GPT2Tokenizer"}, {"tokenizer_class": None}, {"add_bos_token": True},
                   {"clean_up_tokenization_spaces": True}, {"auto_map": {"AutoTokenizer": ["x.Tok", None]}}):
        config_path.write_text(json.dumps({**config, **change}))
        assert not isinstance(load_tokenizer(path), Tokenizer), change
    config_path.write_text(json.dumps(config))
    (tmp_path / "base" / "tokenizer.json").unlink()
    assert Tokenizer.from_dir(path) is None


def test_loading_the_tokenizer_imports_neither_torch_nor_the_model_registry(smollm2_dir):
    code = ("import sys, uniarm_jax; t = uniarm_jax.load_tokenizer(sys.argv[1]); "
            "t.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False); "
            "print(type(t).__name__, 'torch' in sys.modules, 'transformers.models.auto' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, smollm2_dir], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Tokenizer", "False", "False"]
