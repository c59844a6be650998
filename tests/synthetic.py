"""A learnable synthetic preference task, written as the general multi-objective schema.

Responses are six words over {apple, banana, cherry, grape}. Objective `fruit` prefers the response
with more "apple", objective `berry` the one with more "cherry"; scores are those counts. An ARM can
learn both by raising the log-prob of one word, and the two objectives trade off."""

import json

import numpy as np

WORDS = ("apple", "banana", "cherry", "grape")
PROMPTS = ("Name some fruit.", "What is in the basket?", "List what you ate.", "Say six words.")


def write_pairs(path, n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        written = 0
        while written < n:
            a, b = (list(rng.choice(WORDS, 6)) for _ in range(2))
            fruit = (a.count("apple"), b.count("apple"))
            berry = (a.count("cherry"), b.count("cherry"))
            if fruit[0] == fruit[1] or berry[0] == berry[1]:
                continue
            f.write(json.dumps({
                "prompt": PROMPTS[written % len(PROMPTS)], "response_0": " ".join(a), "response_1": " ".join(b),
                "label_fruit": int(fruit[1] > fruit[0]), "label_berry": int(berry[1] > berry[0]),
                "score_fruit_0": fruit[0], "score_fruit_1": fruit[1],
                "score_berry_0": berry[0], "score_berry_1": berry[1]}) + "\n")
            written += 1
    return str(path)


def vocabulary() -> list[str]:
    """Every word the task's prompts and responses use (for a word-level tokenizer)."""
    import re

    return sorted(set(WORDS) | {w for p in PROMPTS for w in re.findall(r"\w+|[^\w\s]", p)})
