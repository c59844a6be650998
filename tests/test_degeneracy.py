"""The degeneracy rule on hand-made cases: the run-on repetition seen in the committed samples is
flagged, fluent paragraphs and lists whose words legitimately repeat are not."""

import pytest

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.scoring.degeneracy import DegeneracyRule

RULE = DegeneracyRule()

FLUENT = [
    "The water cycle describes how water moves between the oceans, the air and the land. Heat from the sun "
    "evaporates water from the surface of the sea; the vapour rises, cools and condenses into clouds. When the "
    "droplets grow heavy enough they fall as rain or snow, which runs off into rivers or soaks into the ground, "
    "and in the end the water returns to the sea, where the cycle begins again.",
    "Here is a shopping list: red apples, green apples, yellow apples, fresh bread, fresh milk and fresh eggs.",
    "1. Preheat the oven. 2. Mix the flour and the sugar. 3. Add the eggs. 4. Bake the cake for 30 minutes. "
    "5. Let the cake cool before you cut the cake.",
    "Step 1: open the box. Step 2: take out the phone. Step 3: charge the phone. Step 4: turn on the phone.",
    "Paris is the capital of France.",
    "Ha ha ha, that is a good one!",
]


@pytest.mark.parametrize("text", FLUENT)
def test_fluent_text_is_not_flagged(text):
    assert RULE.reason(text, ended=True) is None


@pytest.mark.parametrize("text,reason", [
    ("a device, is a device, and a device, is a device, and a device, is a device, and a device", "repetition"),
    ("Ere-re-re-re-re-re-re-re", "run"),
    ("The answer is very very very very simple.", "run"),
    ("I like it. I like it. I like it. I like it.", "run"),
    ("Sure, the best way is to go to the shop and buy it, buy it, buy it, buy it.", "run"),
    ("", "empty"),
    ("  ... ", "empty"),
    ("Okay.", "empty"),
])
def test_degenerate_text_is_flagged(text, reason):
    assert RULE.reason(text) == reason


def test_a_response_that_never_ended_is_flagged_when_known():
    text = FLUENT[0]
    assert RULE.reason(text, ended=False) == "no_end"
    assert RULE.reason(text, ended=None) is None
    assert DegeneracyRule(require_end=False).reason(text, ended=False) is None
    assert RULE.reasons([text, ""], [False, True]) == ["no_end", "empty"]


def test_the_thresholds_are_the_rule_fields():
    text = "The answer is very very very simple."
    assert RULE.reason(text) is None and DegeneracyRule(max_run=3).reason(text) == "run"
    assert DegeneracyRule(min_words=1).reason("Okay.") is None
    assert DegeneracyRule.from_spec(True) == RULE == DegeneracyRule.from_spec({})
    assert DegeneracyRule.from_spec(None) is None and DegeneracyRule.from_spec(False) is None
    with pytest.raises(ConfigError, match="degeneracy='yes'; expected a mapping"):
        DegeneracyRule.from_spec("yes")
    assert DegeneracyRule.from_spec({"max_share": 0.5}).max_share == 0.5
    with pytest.raises(ConfigError, match="unknown field 'share'"):
        DegeneracyRule.from_spec({"share": 0.5})
    with pytest.raises(ConfigError, match="max_share=1.5; expected a share in"):
        DegeneracyRule(max_share=1.5)
    with pytest.raises(ConfigError, match="max_run=1; expected an integer of at least 2"):
        DegeneracyRule(max_run=1)
