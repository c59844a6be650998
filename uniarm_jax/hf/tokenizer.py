"""The tokenizer beside the weights, read straight from its `tokenizer.json` with the `tokenizers` library.

Why not transformers' `AutoTokenizer` everywhere: importing it pulls in torch and the model registry,
about 3.5 s and 400 MB of every `uniarm sample`, `serve` or `train` process on the 2-core CPU, more
than loading SmolLM2's weights (bench/decode.py's whole-process figure). For the generic fast
tokenizer classes transformers itself uses the `tokenizer.json` as saved, so reading that file gives
the same ids; the chat template is rendered by transformers' own renderer, whose module imports
neither torch nor the registry. Any other directory (a model-specific tokenizer class that transformers
rebuilds or adjusts, a SentencePiece model without `tokenizer.json`, code of its own, clean-up of
decoded spaces) goes to `AutoTokenizer` as before: same behaviour, the slower path.

`Tokenizer` has the part of the transformers API this project uses: `tokenizer(text or texts,
add_special_tokens=...)["input_ids"]`, `decode`, `get_vocab`, `len`, the special tokens and their
ids, `chat_template` and `apply_chat_template`.
"""

from __future__ import annotations

import json
import os

# Classes that transformers builds from `tokenizer.json` as it is (TokenizersBackend, also named
# PreTrainedTokenizerFast): no class-specific normaliser, pre-tokeniser or decoder of its own. A directory
# that names no class gets one from its model type (config.json) in transformers: AutoTokenizer there.
GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
# the named special tokens transformers passes to a chat template (`special_tokens_map`)
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer_config.json keys under which transformers changes the backend tokenizer it loaded
ADJUSTING_KEYS = ("auto_map", "add_prefix_space", "split_special_tokens", "fix_mistral_regex", "add_bos_token",
                  "add_eos_token", "post_processor")


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Tokenizer:
    """A `tokenizers.Tokenizer` with the special tokens and chat template of its directory."""

    def __init__(self, core, special: dict[str, str], chat_template):
        core.no_truncation()
        core.no_padding()
        self._core = core
        self.special_tokens_map = special
        self.chat_template = chat_template
        for name in SPECIAL_TOKENS:
            token = special.get(name)
            setattr(self, name, token)
            setattr(self, f"{name}_id", None if token is None else core.token_to_id(token))

    @classmethod
    def from_dir(cls, hf_dir: str) -> Tokenizer | None:
        """The directory's tokenizer, or None where transformers would not use its `tokenizer.json` as is."""
        import tokenizers

        path = os.path.join(hf_dir, "tokenizer.json")
        config = _read_json(os.path.join(hf_dir, "tokenizer_config.json"))
        if (not os.path.isfile(path) or config.get("tokenizer_class") not in GENERIC_CLASSES
                or any(key in config for key in ADJUSTING_KEYS) or config.get("clean_up_tokenization_spaces")
                or os.path.isdir(os.path.join(hf_dir, "additional_chat_templates"))):
            return None
        core = tokenizers.Tokenizer.from_file(path)
        for idx, token in config.get("added_tokens_decoder", {}).items():
            if core.token_to_id(_token_text(token)) != int(idx):  # transformers would add it
                return None
        special = {**_read_json(os.path.join(hf_dir, "special_tokens_map.json")), **config}
        special = {name: _token_text(special[name]) for name in SPECIAL_TOKENS if special.get(name) is not None}
        if any(core.token_to_id(token) is None for token in special.values()):
            return None
        return cls(core, special, _chat_template(hf_dir, config))

    def __call__(self, text, add_special_tokens: bool = True) -> dict:
        if isinstance(text, str):
            return {"input_ids": self._core.encode(text, add_special_tokens=add_special_tokens).ids}
        encoded = self._core.encode_batch(list(text), add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encoded]}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._core.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def get_vocab(self) -> dict[str, int]:
        return self._core.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self._core.get_vocab_size(with_added_tokens=True)

    def apply_chat_template(self, messages: list[dict], tokenize: bool = True, add_generation_prompt: bool = False,
                            return_dict: bool = True, **kwargs):
        """The conversation in the chat template, rendered as transformers renders it (the named special
        tokens passed to the template) and, with `tokenize`, encoded as transformers encodes it (no
        special tokens added: the template writes its own); transformers' defaults."""
        from transformers.utils.chat_template_utils import render_jinja_template

        template = self.chat_template
        if isinstance(template, dict):
            if "default" not in template:
                raise ValueError(f"this tokenizer has chat templates {sorted(template)} and no 'default'")
            template = template["default"]
        if template is None:
            raise ValueError("this tokenizer has no chat template")
        rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                            add_generation_prompt=add_generation_prompt,
                                            **{**self.special_tokens_map, **kwargs})
        if not tokenize:
            return rendered[0]
        encoded = self(rendered[0], add_special_tokens=False)
        return encoded if return_dict else encoded["input_ids"]


def _chat_template(hf_dir: str, config: dict):
    """The chat template as transformers finds it: `chat_template.jinja`, else tokenizer_config.json's
    (one string, or named templates as a dict)."""
    path = os.path.join(hf_dir, "chat_template.jinja")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    template = config.get("chat_template")
    if isinstance(template, list):
        return {t["name"]: t["template"] for t in template}
    return template
