"""The scorer protocol and the checks every scorer passes: one finite score per response."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from uniarm_jax.errors import ScoringError


@runtime_checkable
class Scorer(Protocol):
    name: str

    def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray: ...


def short_text(prompt: str, limit: int = 60) -> str:
    return prompt if len(prompt) <= limit else prompt[:limit] + "…"


def check_inputs(prompts, responses) -> tuple[list[str], list[str]]:
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ScoringError(f"{len(prompts)} prompts and {len(responses)} responses were given; "
                           "expected one response per prompt")
    for what, texts in (("prompt", prompts), ("response", responses)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ScoringError(f"{what} {i} is a {type(text).__name__}; expected a str")
    return prompts, responses


def check_scores(name: str, prompts: list[str], scores) -> np.ndarray:
    """`scores` as float64 `[n]`, or an error naming the objective and the first prompt whose response
    scored NaN or ±inf."""
    out = np.asarray(scores, np.float64)
    if out.shape != (len(prompts),):
        raise ScoringError(f"objective {name!r} returned scores of shape {out.shape} for {len(prompts)} "
                           f"responses; expected ({len(prompts)},)")
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        i = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise ScoringError(f"objective {name!r} scored {out[i]} for the response to prompt "
                           f"{short_text(prompts[i])!r}{more}; expected a finite score")
    return out


def score_responses(scorers, prompts, responses, degenerate=None) -> np.ndarray:
    """Scores `[n, k]`: column j is objective j, each column checked to be finite. `degenerate` (one
    flag or reason per response, e.g. `DegeneracyRule.reasons`) gives every flagged response each
    objective's `failure` value: degenerate text scores as the worst response on every objective."""
    prompts, responses = check_inputs(prompts, responses)
    cols = [check_scores(s.name, prompts, s(prompts, responses)) for s in scorers]
    out = np.stack(cols, axis=1) if cols else np.zeros((len(prompts), 0))
    if degenerate is not None:
        flags = np.array([bool(d) for d in degenerate], bool)
        if flags.shape != (len(prompts),):
            raise ScoringError(f"{flags.size} degeneracy flags for {len(prompts)} responses; expected one each")
        if flags.any():
            for j, s in enumerate(scorers):
                if getattr(s, "failure", None) is None:
                    raise ScoringError(f"objective {s.name!r} has no failure value for degenerate responses; give "
                                       "its scorer spec failure: <the score a failed response gets>")
                out[flags, j] = s.failure
    return out


def failure_value(score_range, sign: float, failure: float | None = None) -> float | None:
    """The given `failure`, else the least signed score of a scorer whose raw scores lie in `score_range`
    (None when the scorer is unbounded and no failure was given)."""
    if failure is not None:
        return float(failure)
    return None if score_range is None else float(min(sign * score_range[0], sign * score_range[1]))


class BaseScorer:
    """Shared by the built scorers: input checks, the sign, the failure value and the finiteness check."""

    name: str
    sign: float = 1.0
    score_range: tuple[float, float] | None = None  # the raw scores' bounds, when the scorer has them
    failure: float | None = None  # the score a degenerate response gets (`failure_value`, set by the factory)

    def __call__(self, prompts, responses) -> np.ndarray:
        prompts, responses = check_inputs(prompts, responses)
        if not prompts:
            return np.zeros(0)
        return check_scores(self.name, prompts, self.sign * np.asarray(self._score(prompts, responses), np.float64))

    def _score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        raise NotImplementedError
