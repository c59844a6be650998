"""Programmatic objectives: pure functions of (prompt, response) text. The built-ins of the
small-scale task (`brevity`, `informativeness`, `tone`), or the user's own `module:function`."""

from __future__ import annotations

import importlib
import re
from typing import Callable

import numpy as np

from uniarm_jax.errors import ConfigError, ScoringError
from uniarm_jax.eval.scoring.checks import BaseScorer, short_text

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for with from as into about over under than that this
these those it its it's is are was were be been being am do does did done have has had i you he she we
they me him her us them my your his our their what which who whom whose when where why how not no yes
can could will would shall should may might must just very too also there here up down out off all any
some such only own same both each few more most other again further once s t don't i'm you're
""".split())


POSITIVE = frozenset("""
good great excellent happy glad pleased delighted wonderful kind helpful thank thanks thankful
appreciate love lovely nice enjoy enjoyable welcome pleasure positive hope hopeful best better
brilliant fantastic awesome amazing cheerful friendly warm gentle safe calm easy perfect sure
""".split())


NEGATIVE = frozenset("""
bad terrible awful horrible sad angry upset hate hateful stupid dumb useless worse worst annoying
unfortunately sorry fail failure wrong ugly rude hostile cruel dangerous harmful disgusting boring
difficult impossible never poor painful miserable disappointing
""".split())


def words(text: str) -> list[str]:
    """Lower-cased words (letters/digits, with inner apostrophes): the unit of every built-in."""
    return _WORD.findall(text.lower())


def brevity(prompt: str, response: str, scale: float = 50.0) -> float:
    """`scale / (scale + n)` for a response of n words: 1 when empty, 1/2 at `scale` words, → 0.
    Bounded, so it sits on the same footing as the others for hypervolumes."""
    return scale / (scale + len(words(response)))


def informativeness(prompt: str, response: str, scale: float = 10.0) -> float:
    """`d / (d + scale)` for d distinct content words (not stopwords) of the response that the prompt
    does not already hold: new information costs words, so it trades off against `brevity`."""
    seen = set(words(prompt))
    d = len({w for w in words(response) if w not in STOPWORDS and w not in seen})
    return d / (d + scale)


def tone(prompt: str, response: str) -> float:
    """`(pos − neg) / (pos + neg + 1)` over the words of the response found in `POSITIVE` / `NEGATIVE`
    (counted with repeats, no negation handling): in (−1, 1), 0 for a neutral response."""
    ws = words(response)
    pos = sum(w in POSITIVE for w in ws)
    neg = sum(w in NEGATIVE for w in ws)
    return (pos - neg) / (pos + neg + 1)


BUILTINS: dict[str, Callable[..., float]] = {"brevity": brevity, "informativeness": informativeness,
                                             "tone": tone}
RANGES = {"brevity": (0.0, 1.0), "informativeness": (0.0, 1.0), "tone": (-1.0, 1.0)}  # each built-in's bounds


class ProgrammaticScorer(BaseScorer):
    """`fn(prompt, response, **args) -> float` applied to each pair."""

    def __init__(self, name: str, fn: Callable[..., float], args: dict | None = None, sign: float = 1.0,
                 score_range: tuple[float, float] | None = None):
        self.name, self.fn, self.args, self.sign, self.score_range = name, fn, dict(args or {}), sign, score_range

    def _score(self, prompts, responses):
        out = []
        for p, r in zip(prompts, responses):
            value = self.fn(p, r, **self.args)
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                fn = getattr(self.fn, "__name__", self.fn)
                raise ScoringError(f"objective {self.name!r}: {fn} returned {value!r} for the response to prompt "
                                   f"{short_text(p)!r}; expected a number") from None
        return np.array(out, np.float64)


def import_function(path: str, name: str) -> Callable:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"function {path!r} of objective {name!r} is neither a built-in {tuple(BUILTINS)} "
                          "nor an import path 'module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"function {path!r} of objective {name!r} could not be imported: {e}") from None
    if not callable(fn):
        raise ConfigError(f"function {path!r} of objective {name!r} is a {type(fn).__name__}; expected a callable")
    return fn
