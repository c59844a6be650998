"""Prompt templates: how a raw prompt is framed before tokenisation (docs/methods.md §5).

A template only builds the prompt *text*. BOS is added once by the tokenisation (`tokenization.py`),
never by a template, so a chat template that writes its own BOS does not double it.
"""

from __future__ import annotations

from uniarm_jax.errors import ConfigError

# The exact strings of the papers' reference code; `{prompt}` is the raw prompt.
FORMATS = {
    "pku": "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:",
    "alpaca": ("Below is an instruction that describes a task. Write a response that appropriately "
               "completes the request.\n\n### Instruction:\n{prompt}\n\n### Response:\n"),
    "tulu2": "<|user|>\n{prompt}\n<|assistant|>\n",
    "raw": "{prompt}",  # HH-RLHF: the prompt already holds "\n\nHuman: … \n\nAssistant:"
}
TEMPLATES = (*FORMATS, "chat")


def check_template(name: str, tokenizer=None) -> None:
    """Refuses an unknown template, or `chat` with a tokenizer that has no chat template."""
    if name not in TEMPLATES:
        raise ConfigError(f"template {name!r} is not one of {TEMPLATES}")
    if name == "chat" and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("template 'chat' needs a tokenizer with a chat template; this one has none "
                          f"(pick one of {tuple(FORMATS)})")


def apply_template(name: str, prompt: str, tokenizer=None) -> str:
    """The prompt text the model sees. `chat` is the tokenizer's own template for one user message,
    with the generation prompt (the assistant turn's header) appended."""
    check_template(name, tokenizer)
    if name == "chat":
        if tokenizer is None:
            raise ConfigError("template 'chat' needs the tokenizer whose chat template it applies")
        return chat_text(tokenizer, [{"role": "user", "content": prompt}])
    # str.replace, not str.format: prompts may hold braces.
    return FORMATS[name].replace("{prompt}", prompt)


def chat_text(tokenizer, messages: list[dict]) -> str:
    """A conversation (`{"role", "content"}` dicts) in the tokenizer's chat template, with the
    generation prompt (the assistant turn's header) appended."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
