"""What a request may ask (OpenAI's chat and completion bodies plus `preference`), and its checks.

Types are pydantic's (a wrong type is refused by FastAPI, named by its field); everything the types
cannot say is checked here and refused with a `RequestError` naming the field, before a request is
queued: the model, α (length, sign, finiteness, the simplex), `max_tokens`, `temperature`, `top_p`,
`stop`, `n`, and the prompt's length after its template.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from uniarm_jax.errors import ConfigError, RequestError

MAX_STOPS = 4  # as OpenAI's API
MAX_SEED = 2**31 - 1  # jax.random.key keeps 32 bits: larger seeds would share streams


class Body(BaseModel):
    """The fields both endpoints share; unknown fields are ignored, as OpenAI's clients send some."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int = 1
    preference: list[float] | None = None

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatBody(Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None  # the newer name of max_tokens


class CompletionBody(Body):
    prompt: str | list[str]


def checked_sampling(body: Body, *, max_new_tokens: int, temperature: float, top_p: float) -> dict:
    """max_tokens, temperature, top_p and stop of `body` (the server's defaults where absent), and its
    seed checked."""
    if body.n != 1:
        raise RequestError(f"n={body.n} is not supported; this server returns one choice per request (n=1)", "n")
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    if max_tokens is None:
        max_tokens = max_new_tokens
    if not 1 <= max_tokens <= max_new_tokens:
        raise RequestError(f"max_tokens={max_tokens} is out of range; expected 1 to {max_new_tokens} (the server's "
                           "--max-new-tokens)", "max_tokens")
    temperature = temperature if body.temperature is None else body.temperature
    if not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise RequestError(f"temperature={temperature} is out of range; expected 0 (greedy) to 2", "temperature")
    top_p = top_p if body.top_p is None else body.top_p
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise RequestError(f"top_p={top_p} is out of range; expected more than 0, at most 1", "top_p")
    if body.seed is not None and not 0 <= body.seed <= MAX_SEED:
        raise RequestError(f"seed={body.seed} is out of range; expected 0 to {MAX_SEED}", "seed")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS or not all(stops):
        raise RequestError(f"stop must be up to {MAX_STOPS} non-empty strings; got {len(stops)}", "stop")
    return {"max_tokens": max_tokens, "temperature": float(temperature), "top_p": float(top_p), "stops": tuple(stops)}


def checked_preference(preference, num_objectives: int, objectives: list[str], model: str):
    """α as float32 `[k]`, or None when the model takes none (the base alone, or no ARM)."""
    from uniarm_jax.model.preferences import check_pref

    if preference is None:
        return None
    if not num_objectives:
        raise RequestError(f"model {model!r} takes no preference (it is the base alone); leave out 'preference'",
                           "preference")
    try:
        return check_pref(preference, num_objectives)[0]
    except ConfigError as e:
        raise RequestError(f"{e} (objectives in order: {', '.join(objectives)})", "preference") from None


def chat_prompt_text(messages: list[Message], template: str, tokenizer) -> str:
    """The prompt text of a conversation: the tokenizer's chat template over every message (as
    `uniarm sample --template chat` frames one user message), or another template around a lone user
    message (the framing the ARM was trained with)."""
    from uniarm_jax.data.templates import apply_template, chat_text

    if template == "chat":
        try:
            return chat_text(tokenizer, [{"role": m.role, "content": m.text} for m in messages])
        except Exception as e:  # jinja refuses what the model's template does not support
            raise RequestError(f"the model's chat template refused these messages: {e}", "messages") from None
    if len(messages) != 1 or messages[0].role != "user":
        raise RequestError(f"this server frames prompts with the {template!r} template, which takes one user message; "
                           f"got {len(messages)} messages", "messages")
    return apply_template(template, messages[0].text, tokenizer)


def completion_prompt(body: CompletionBody) -> str:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise RequestError(f"one prompt per request; got {len(prompts)}", "prompt")
    return prompts[0]
