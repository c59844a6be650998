"""A transformers sequence-classification reward model from a local directory (the gpt2-large
helpful/harmless reward models of the assistant task), run in torch on the CPU."""

from __future__ import annotations

import numpy as np

from uniarm_jax.errors import ConfigError
from uniarm_jax.eval.scoring import model_inputs
from uniarm_jax.eval.scoring.checks import BaseScorer


class HFClassifierScorer(BaseScorer):
    """A transformers sequence classifier (torch, CPU, float32); the score is the logit `label_index`
    of the model's own pooling (its last non-pad token). Right-padded batches, so models with absolute
    positions (GPT-2) see each text as they would alone."""

    def __init__(self, name: str, path: str, tokenizer: str | None = None, label_index: int = 0,
                 format: str = "{prompt}{response}", batch_size: int = 8, max_length: int | None = None,
                 sign: float = 1.0):
        import torch
        from transformers import AutoModelForSequenceClassification

        model_inputs.local_dir(path, "reward model", name)
        self.name, self.format, self.batch_size, self.sign = name, format, batch_size, sign
        self.tokenizer = model_inputs.load_scorer_tokenizer(tokenizer or path, name)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, trust_remote_code=False, dtype=torch.float32).eval()
        cfg = self.model.config
        if not 0 <= label_index < cfg.num_labels:
            raise ConfigError(f"label_index={label_index} of objective {name!r} is out of range; "
                              f"{path} has {cfg.num_labels} output(s)")
        self.label_index = label_index
        if cfg.pad_token_id is None:
            # transformers pools at the last token that is not the config's pad id: batches pad with it.
            cfg.pad_token_id = next((t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
                                     if t is not None), None)
            if cfg.pad_token_id is None:
                raise ConfigError(f"objective {name!r}: neither {path}/config.json nor the tokenizer names a pad "
                                  "or EOS token; expected one to pad batches with")
        self.pad_id = cfg.pad_token_id
        self.max_length = max_length or getattr(cfg, "max_position_embeddings", None) or 1024

    def _score(self, prompts, responses):
        import torch

        rows = model_inputs.encode_pairs(self.tokenizer, self.format, prompts, responses, self.max_length, self.name)
        out = np.empty(len(rows))
        for idx in model_inputs.length_batches(rows, self.batch_size):
            chunk = [rows[i] for i in idx]
            ids, mask = model_inputs.pad_rows(chunk, len(chunk), max(map(len, chunk)), self.pad_id, "right")
            with torch.no_grad():
                logits = self.model(input_ids=torch.from_numpy(ids).long(),
                                    attention_mask=torch.from_numpy(mask).long()).logits
            out[idx] = logits[:, self.label_index].float().numpy()
        return out
