"""Tokens to streamed text: each new token's text as a delta, stop strings cut where they begin.

The whole response is decoded again at every token (as `uniarm sample` decodes it at the end, special
tokens skipped), so the deltas add up to exactly the text of the finished response. A delta holds back
what could still change: a trailing incomplete UTF-8 character (decoded as U+FFFD) and a tail that
could be the start of a stop string.
"""

from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stops: tuple[str, ...] = ()):
        self.tokenizer, self.stops = tokenizer, stops
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of `text` already handed out
        self.stopped = False

    def add(self, token: int) -> str:
        """The text this token releases; after a stop string, `stopped` is set and nothing more comes."""
        self.ids.append(token)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            return self._release(len(self.text))
        held = max((n for s in self.stops for n in range(len(s) - 1, 0, -1) if self.text.endswith(s[:n])),
                   default=0)
        safe = len(self.text) - held
        while safe > self.sent and self.text[safe - 1] == "\ufffd":
            safe -= 1
        return self._release(safe)

    def finish(self) -> str:
        """What was held back, at the end of the response."""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        delta = self.text[self.sent:max(end, self.sent)]
        self.sent = max(end, self.sent)
        return delta
