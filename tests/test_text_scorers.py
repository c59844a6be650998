"""The library-backed scorers against their libraries called directly: VADER's compound score,
textstat's Flesch reading ease (clipped to [0, 100]), and MiniLM relevance against
sentence-transformers' own SentenceTransformer on the bundled model (cosine of normalised embeddings,
to 1e-5); plus each one's failure value and the degeneracy rule applied by the scoring layer."""

import numpy as np
import pytest

from uniarm_jax.errors import ConfigError, ScoringError
from uniarm_jax.eval.scoring import make_scorer, make_scorers, score_responses
from uniarm_jax.eval.scoring.degeneracy import DegeneracyRule

PROMPTS = ["How do I bake bread at home?", "What is the capital of France?", "Tell me about your day.",
           "Why is the sky blue?"]
RESPONSES = ["Mix flour, water, yeast and salt, let the dough rise for two hours, then bake it at 230 C.",
             "Paris is the capital of France, and it is a wonderful city to visit!",
             "It was a terrible, awful day and I hated every minute of it.",
             "Sunlight scatters off the molecules of the atmosphere; short blue wavelengths scatter the most, "
             "so the sky looks blue from every direction during the day."]


def test_vader_is_the_compound_score():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    expected = [analyzer.polarity_scores(r)["compound"] for r in RESPONSES]
    scorer = make_scorer({"kind": "vader"})
    np.testing.assert_array_equal(scorer(PROMPTS, RESPONSES), expected)
    assert scorer.name == "sentiment" and scorer.failure == -1.0
    assert expected[1] > 0.5 and expected[2] < -0.5  # the texts do span the scale
    assert make_scorer({"kind": "vader", "sign": -1}).failure == -1.0


def test_readability_is_flesch_reading_ease_clipped():
    import textstat

    texts = RESPONSES + ["Go.", "Notwithstanding institutionalised interdisciplinary epistemological considerations "
                                "characteristically incomprehensible"]
    raw = np.array([textstat.flesch_reading_ease(t) for t in texts])
    scorer = make_scorer({"kind": "readability", "name": "easy"})
    np.testing.assert_array_equal(scorer(["p"] * len(texts), texts), np.clip(raw, 0, 100))
    assert raw[-2] > 100 and raw[-1] < 0  # both clips are exercised
    assert scorer.name == "easy" and scorer.failure == 0.0


def test_relevance_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from uniarm_jax.eval.scoring.relevance import bundled_minilm

    model = SentenceTransformer(bundled_minilm(), device="cpu")
    p = model.encode(PROMPTS, normalize_embeddings=True, convert_to_numpy=True)
    r = model.encode(RESPONSES, normalize_embeddings=True, convert_to_numpy=True)
    expected = np.sum(p.astype(np.float64) * r, axis=1)
    scorer = make_scorer({"kind": "relevance", "batch_size": 3})
    got = scorer(PROMPTS, RESPONSES)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # on-topic answers are more relevant than a swapped one
    swapped = scorer(PROMPTS, RESPONSES[::-1])
    assert got[0] > swapped[0] + 0.2 and got[1] > swapped[1] + 0.2
    assert scorer.failure == -1.0


def test_degenerate_responses_fail_every_objective():
    scorers = make_scorers([{"kind": "vader"}, {"kind": "readability"},
                            {"kind": "programmatic", "function": "brevity"},
                            {"kind": "programmatic", "function": "tone", "sign": -1}])
    responses = ["What a great, lovely, wonderful day!", "a device, is a device, and a device, is a device, and "
                 "a device, is a device", "Ere-re-re-re-re-re", ""]
    reasons = DegeneracyRule().reasons(responses)
    assert reasons == [None, "repetition", "run", "empty"]
    clean = score_responses(scorers, ["p"] * 4, responses)
    scored = score_responses(scorers, ["p"] * 4, responses, reasons)
    np.testing.assert_array_equal(scored[0], clean[0])
    np.testing.assert_array_equal(scored[1:], np.tile([-1.0, 0.0, 0.0, -1.0], (3, 1)))
    assert clean[1, 0] > scored[1, 0]  # VADER alone rates the repetition above a failure


def test_a_scorer_without_a_failure_value_is_refused_only_when_needed():
    scorer = make_scorer({"kind": "programmatic", "function": "tests.test_text_scorers:length"})
    assert scorer.failure is None
    assert score_responses([scorer], ["p"], ["fine text here"], [None]).shape == (1, 1)
    with pytest.raises(ScoringError, match="objective 'length' has no failure value"):
        score_responses([scorer], ["p"], ["x"], ["empty"])
    given = make_scorer({"kind": "programmatic", "function": "tests.test_text_scorers:length", "failure": -5})
    assert score_responses([given], ["p"], ["x"], ["empty"])[0, 0] == -5.0
    with pytest.raises(ConfigError, match="failure='low'; expected a finite number"):
        make_scorer({"kind": "vader", "failure": "low"})
    with pytest.raises(ConfigError, match="unknown key 'path'"):
        make_scorer({"kind": "vader", "path": "x"})


def length(prompt, response):
    return float(len(response))
