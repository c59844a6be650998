"""Tokenisation as the reference code does it (docs/methods.md §5): BOS + prompt, then response + EOS.

Rules (defaults are the papers'):
- The prompt is the template's text, tokenised without special tokens. BOS is put in front exactly
  once: a BOS the template already wrote (chat templates do) is removed first, then the prompt keeps
  only its LAST `max_prompt_tokens - 1` tokens, then BOS goes back in front. The prompt side, BOS
  included, is at most `max_prompt_tokens` (512). A tokenizer without a BOS token gets none.
- The response is tokenised on its own and ends with EOS. If prompt + response would exceed
  `max_total_tokens` (1024), the response is cut and has no EOS (as TRL's cut): it is a prefix, and
  an EOS would teach an end that never happened. A response that never ended by itself (the data's
  `ended_<i>` is false, data/pairs.py) is a prefix too.
- The loss sees only response tokens, EOS included.

Our choices where the reference (TRL's DPO `tokenize_row`) differs: the prompt is always cut to its
limit, not only when the pair is too long, so a response's tokens never depend on the other
response; BOS survives truncation (TRL's keep-end cut could drop it). Prompt and response are
tokenised separately, as the ARM sees them at decode time (prompt tokens first, then generated
tokens), which also makes the loss mask's boundary exact.
(The module is not called `tokenize` so that it cannot shadow the standard library's.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from uniarm_jax.data.pairs import PreferenceData
from uniarm_jax.data.templates import apply_template, check_template
from uniarm_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    template: str = "raw"
    max_prompt_tokens: int = 512  # BOS included
    max_total_tokens: int = 1024  # prompt + response + EOS
    add_bos: bool = True

    def __post_init__(self):
        check_template(self.template)
        if self.max_prompt_tokens < 1:
            raise ConfigError(f"max_prompt_tokens={self.max_prompt_tokens} must be at least 1")
        if self.max_total_tokens <= self.max_prompt_tokens:
            raise ConfigError(f"max_total_tokens={self.max_total_tokens} must exceed max_prompt_tokens="
                              f"{self.max_prompt_tokens}, leaving room for at least the EOS of the response")


@dataclasses.dataclass
class TokenizedPairs:
    """Token ids of every example's prompt and two responses, unpadded, plus labels and scores."""

    prompt_ids: list[np.ndarray]  # per example: [P] int32, BOS first
    response_ids: list[tuple[np.ndarray, np.ndarray]]  # per example: both responses, EOS last if they ended
    labels: np.ndarray  # [N, k] int32
    scores: np.ndarray  # [N, 2, k] float32, NaN where absent
    objectives: tuple[str, ...]
    pad_id: int
    config: TokenizeConfig
    prompt_truncated: np.ndarray  # [N] bool
    response_truncated: np.ndarray  # [N, 2] bool

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def lengths(self) -> np.ndarray:
        """[N, 2] int: total tokens of prompt + response j."""
        return np.array([[len(p) + len(r) for r in rs] for p, rs in zip(self.prompt_ids, self.response_ids)],
                        np.int64).reshape(len(self), 2)


def special_ids(tokenizer, config: TokenizeConfig) -> tuple[int | None, int, int]:
    """(bos, eos, pad) ids: no BOS if the tokenizer has none or `add_bos` is off; pad falls back to 0."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no EOS token; every response must end with one")
    bos = tokenizer.bos_token_id if config.add_bos else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return bos, tokenizer.eos_token_id, pad


def finish_prompt(ids: list[int], bos: int | None, config: TokenizeConfig) -> tuple[list[int], bool]:
    """The prompt side from the template's tokens: BOS once in front, only the last tokens kept."""
    if bos is None:
        return ids[-config.max_prompt_tokens:], len(ids) > config.max_prompt_tokens
    while ids and ids[0] == bos:
        ids = ids[1:]
    keep = config.max_prompt_tokens - 1
    return [bos] + (ids[-keep:] if keep else []), len(ids) > keep


def finish_response(ids: list[int], eos: int, budget: int, ended: bool = True) -> tuple[list[int], bool]:
    """Response tokens in at most `budget` tokens (≥ 1) and whether they were cut; an `ended` response
    that fits whole gets one EOS, and one cut (or that never `ended`) is the prefix it is, without one,
    so no loss learns an end that never happened (data/pairs.py)."""
    while ids and ids[-1] == eos:
        ids = ids[:-1]
    if ended and len(ids) < budget:
        return ids + [eos], False
    return ids[:budget], len(ids) > budget


def encode_prompt(tokenizer, prompt: str, config: TokenizeConfig) -> tuple[list[int], int, bool]:
    """A prompt as the ARM was trained to see it (template, BOS once, the last tokens kept), for
    decoding: `(ids, untruncated length, truncated?)`."""
    return encode_framed(tokenizer, apply_template(config.template, prompt, tokenizer), config)


def encode_framed(tokenizer, text: str, config: TokenizeConfig) -> tuple[list[int], int, bool]:
    """`encode_prompt` of a prompt already framed by its template (the server frames whole chats)."""
    bos, _, _ = special_ids(tokenizer, config)
    raw = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids, cut = finish_prompt(list(raw), bos, config)
    return ids, len(raw) + (bos is not None and (not raw or raw[0] != bos)), cut


def encode_prompts(tokenizer, prompts: list[str], template: str, max_new_tokens: int, max_positions: int,
                   max_prompt_tokens: int | None = None) -> list[list[int]]:
    """Every prompt encoded for decoding (`encode_prompt`), each refused unless it fits whole: within
    `max_prompt_tokens` (if given) and with `max_new_tokens` more within the model's `max_positions`."""
    limit = max_positions - max_new_tokens
    if max_prompt_tokens is not None:
        limit = min(limit, max_prompt_tokens)
    if limit < 1:
        raise ConfigError(f"{max_new_tokens} new tokens leave no room for a prompt in the model's {max_positions} "
                          "positions")
    config = TokenizeConfig(template=template, max_prompt_tokens=limit, max_total_tokens=limit + max_new_tokens)
    encoded = []
    for i, prompt in enumerate(prompts):
        ids, length, cut = encode_prompt(tokenizer, prompt, config)
        if cut:
            why = f"max_prompt_tokens={max_prompt_tokens}" if limit == max_prompt_tokens else \
                f"{max_new_tokens} new tokens in the model's {max_positions} positions"
            raise ConfigError(f"prompt {i + 1} has {length} tokens; at most {limit} fit ({why})")
        encoded.append(ids)
    return encoded


def encode(tokenizer, prompt: str, response: str, config: TokenizeConfig) -> tuple[np.ndarray, np.ndarray]:
    """One (prompt, response) pair: token ids `[T]` and the loss mask `[T]` (1 on response tokens)."""
    bos, eos, _ = special_ids(tokenizer, config)
    text = apply_template(config.template, prompt, tokenizer)
    p, _ = finish_prompt(tokenizer(text, add_special_tokens=False)["input_ids"], bos, config)
    r, _ = finish_response(tokenizer(response, add_special_tokens=False)["input_ids"], eos,
                           config.max_total_tokens - len(p))
    return np.array(p + r, np.int32), np.array([0] * len(p) + [1] * len(r), np.int32)


def tokenize_pairs(data: PreferenceData, tokenizer, config: TokenizeConfig) -> TokenizedPairs:
    """Tokenises every example (batched through the fast tokenizer) under `config`."""
    check_template(config.template, tokenizer)
    bos, eos, pad = special_ids(tokenizer, config)
    ex = data.examples

    def ids(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    prompts = ids([apply_template(config.template, e.prompt, tokenizer) for e in ex])
    responses = [ids([e.response_0 for e in ex]), ids([e.response_1 for e in ex])]
    prompt_ids, response_ids, p_cut, r_cut = [], [], [], []
    for i, p in enumerate(prompts):
        p, cut = finish_prompt(list(p), bos, config)
        pair = [finish_response(list(responses[j][i]), eos, config.max_total_tokens - len(p), ex[i].ended[j])
                for j in (0, 1)]
        prompt_ids.append(np.array(p, np.int32))
        response_ids.append(tuple(np.array(r, np.int32) for r, _ in pair))
        p_cut.append(cut)
        r_cut.append([c for _, c in pair])
    return TokenizedPairs(prompt_ids, response_ids, data.labels(), data.scores(), data.objectives, pad, config,
                          np.array(p_cut, bool), np.array(r_cut, bool).reshape(len(ex), 2))
