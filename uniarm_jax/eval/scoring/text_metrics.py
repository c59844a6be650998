"""Objectives from independent text-metric libraries: VADER sentiment (`vaderSentiment`) and Flesch
reading ease (`textstat`), each run on the response alone."""

from __future__ import annotations

import numpy as np

from uniarm_jax.eval.scoring.checks import BaseScorer

READABILITY_RANGE = (0.0, 100.0)  # Flesch's scale: 0 very hard, 100 very easy (raw values may leave it)


class VaderScorer(BaseScorer):
    """VADER's compound sentiment of the response, in [−1, 1] (−1 most negative)."""

    score_range = (-1.0, 1.0)

    def __init__(self, name: str = "sentiment", sign: float = 1.0):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.name, self.sign = name, sign
        self.analyzer = SentimentIntensityAnalyzer()

    def _score(self, prompts, responses):
        return np.array([self.analyzer.polarity_scores(r)["compound"] for r in responses], np.float64)


class ReadabilityScorer(BaseScorer):
    """textstat's Flesch reading ease of the response, clipped to the scale's [0, 100]: unclipped, short
    words reach 121.2 and long sentences of long words fall below 0 without bound (no failure value)."""

    score_range = READABILITY_RANGE

    def __init__(self, name: str = "readability", sign: float = 1.0):
        import textstat

        self.name, self.sign = name, sign
        self.textstat = textstat

    def _score(self, prompts, responses):
        raw = [self.textstat.flesch_reading_ease(r) for r in responses]
        return np.clip(np.array(raw, np.float64), *self.score_range)
