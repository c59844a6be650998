"""Degenerate responses: text that must not win an objective however a scorer rates it.

A word-count or sentiment scorer can rate run-on repetition ("a device, is a device, and a device, …",
"Ere-re-re-re-…") highly; a method that learns to produce it would then top the front. The rule flags

- `empty`: fewer than `min_words` words (no text at all, or a near-empty answer);
- `run`: one word or phrase of up to `max_ngram` words repeated `max_run` times in a row;
- `repetition`: an n-gram (2 ≤ n ≤ `max_ngram`) occurring at least 3 times whose occurrences cover at
  least `max_share` of the words (responses of at least `min_share_words` words);
- `no_end`: the response never ended (no EOS within `max_new_tokens`), when that is known and
  `require_end` is set.

Words are `programmatic.words` (lower-cased letters/digits), so "Ere-re-re" is "ere re re". The
scoring layer (`checks.score_responses`) gives a flagged response each objective's failure value.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.scoring.programmatic import words


@dataclasses.dataclass(frozen=True)
class DegeneracyRule:
    min_words: int = 3
    max_run: int = 4
    max_ngram: int = 4
    max_share: float = 0.4
    min_share_words: int = 12
    require_end: bool = True

    def __post_init__(self):
        for key in ("min_words", "max_run", "max_ngram", "min_share_words"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < (2 if key == "max_run" else 1):
                raise ConfigError(f"degeneracy rule: {key}={value!r}; expected an integer of at least "
                                  f"{2 if key == 'max_run' else 1}")
        if not 0 < self.max_share <= 1:
            raise ConfigError(f"degeneracy rule: max_share={self.max_share!r}; expected a share in (0, 1]")

    @classmethod
    def from_spec(cls, spec) -> "DegeneracyRule | None":
        """A rule from a config mapping of its fields (`{}` or True: the defaults; None or False: none)."""
        if spec is None or spec is False:
            return None
        if spec is True:
            spec = {}
        if not isinstance(spec, dict):
            raise ConfigError(f"degeneracy={spec!r}; expected a mapping of rule fields (or true for the defaults)")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise ConfigError(f"degeneracy rule: unknown field {unknown[0]!r}; expected some of {sorted(fields)}")
        return cls(**spec)

    def reason(self, text: str, ended: bool | None = None) -> str | None:
        """Why `text` is degenerate (`empty`, `run`, `repetition`, `no_end`), or None when it is not."""
        ws = words(text)
        if len(ws) < self.min_words:
            return "empty"
        if _longest_run(ws, self.max_ngram) >= self.max_run:
            return "run"
        if len(ws) >= self.min_share_words and _top_ngram_share(ws, self.max_ngram) >= self.max_share:
            return "repetition"
        if self.require_end and ended is False:
            return "no_end"
        return None

    def reasons(self, texts, ended=None) -> list[str | None]:
        """`reason` for each text; `ended` (one bool per text, or None when unknown)."""
        ended = [None] * len(texts) if ended is None else list(ended)
        return [self.reason(t, e) for t, e in zip(texts, ended)]


def _longest_run(ws: list[str], max_ngram: int) -> int:
    """The most consecutive repeats of any phrase of 1..max_ngram words."""
    best = 1
    for n in range(1, max_ngram + 1):
        for start in range(n):  # each phase of the n-word tiling
            run = 1
            for i in range(start + n, len(ws) - n + 1, n):
                run = run + 1 if ws[i:i + n] == ws[i - n:i] else 1
                best = max(best, run)
    return best


def _top_ngram_share(ws: list[str], max_ngram: int) -> float:
    """The largest share of words covered by the occurrences of one n-gram seen at least 3 times."""
    best = 0.0
    for n in range(2, max_ngram + 1):
        grams = Counter(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))
        for gram, count in grams.most_common(3):
            if count < 3:
                break
            covered = set()
            for i in range(len(ws) - n + 1):
                if tuple(ws[i:i + n]) == gram:
                    covered.update(range(i, i + n))
            best = max(best, len(covered) / len(ws))
    return best
