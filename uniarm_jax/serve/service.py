"""What one `uniarm serve` process serves: the base, its ARMs, the two model ids, the objectives in α
order, and the scheduler its requests go to.

Two models are listed: the guided one (`base+arm...`: the base steered by the ARMs under each
request's α) and the base alone (its id is the base directory's name). Both run in the same slots: a
base-alone row simply gives every ARM weight 0 (x + 0·y is x, bit for bit), so they share every step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import numpy as np

from uniarm_jax import defaults
from uniarm_jax.data.batches import bucket_length
from uniarm_jax.data.templates import apply_template, check_template
from uniarm_jax.data.tokenization import TokenizeConfig, encode_framed
from uniarm_jax.decode import engine
from uniarm_jax.decode.rollout import conditioned_arms, guide_weights, num_objectives
from uniarm_jax.decode.slots import BUCKET, DecodeSlots, SlotPlan
from uniarm_jax.errors import CheckpointError, ConfigError, RequestError
from uniarm_jax.hf.adapter_files import read_adapter
from uniarm_jax.model.preferences import check_pref
from uniarm_jax.serve import requests
from uniarm_jax.serve.scheduler import Job, Scheduler


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    slots: int = 8
    max_queue: int = 64
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS
    template: str = defaults.TEMPLATE
    temperature: float = defaults.TEMPERATURE
    top_p: float = defaults.TOP_P
    top_k: int = defaults.TOP_K
    seed: int = 0
    base_weight: float = 1.0
    default_preference: tuple | None = None


def model_id(path: str) -> str:
    """A model's public name: its directory's name (never the host's path)."""
    return os.path.basename(os.path.normpath(path))


def _recorded_objectives(path: str) -> list[str] | None:
    try:
        return read_adapter(path).objectives  # a PEFT directory records none
    except (CheckpointError, FileNotFoundError):  # a plain Hugging Face directory
        return None


def objective_names(arm_paths: list[str], guides: list) -> list[str]:
    """The objectives in α order: a conditioned ARM's recorded ones; for GenARM, each plain ARM's one
    objective (recorded, else the ARM's name); `objective_i` where nothing was recorded."""
    k = num_objectives(guides)
    conditioned = conditioned_arms(guides)
    if conditioned:
        names = _recorded_objectives(arm_paths[guides.index(conditioned[0])])
        return list(names) if names and len(names) == k else [f"objective_{i + 1}" for i in range(k)]
    names = [_recorded_objectives(p) for p in arm_paths]
    return [n[0] if n and len(n) == 1 else model_id(p) for n, p in zip(names, arm_paths)]


class Service:
    """The served models and their scheduler; turns checked request bodies into queued jobs."""

    def __init__(self, base, tokenizer, guides: list, arm_paths: list[str], arm_weights, options: ServeOptions):
        cfg = base.config
        check_template(options.template, tokenizer)
        if options.slots < 1 or options.max_queue < 0 or options.max_new_tokens < 1:
            raise ConfigError(f"--slots ({options.slots}) and --max-new-tokens ({options.max_new_tokens}) must be at "
                              f"least 1, --max-queue ({options.max_queue}) at least 0")
        self.base, self.tokenizer, self.guides, self.options = base, tokenizer, guides, options
        self.arm_weights = arm_weights or None
        self.k = num_objectives(guides) if guides else 0
        self.objectives = objective_names(arm_paths, guides) if guides else []
        self.base_id = model_id(base.path)
        self.guided_id = "+".join([self.base_id] + [model_id(p) for p in arm_paths]) if guides else None
        if options.default_preference is not None and not self.k:
            raise ConfigError("--default-preference was given, but no ARM takes a preference")
        self.default_pref = None if not self.k else check_pref(
            options.default_preference or [1 / self.k] * self.k, self.k)[0]
        self.prompt_limit = options.max_prompt_tokens
        length = bucket_length(self.prompt_limit, BUCKET, 1 << 30) + options.max_new_tokens
        for m in [base] + guides:
            if length > m.config.max_position_embeddings:
                raise ConfigError(f"--max-prompt-tokens {self.prompt_limit} (bucketed to a multiple of {BUCKET}) + "
                                  f"--max-new-tokens {options.max_new_tokens} = {length} positions exceed a model's "
                                  f"max_position_embeddings={m.config.max_position_embeddings}")
            if m.config.vocab_size < cfg.vocab_size:
                raise ConfigError(f"an ARM has {m.config.vocab_size} tokens, fewer than the base's {cfg.vocab_size}")
        self.tokenize = TokenizeConfig(template=options.template, max_prompt_tokens=self.prompt_limit,
                                       max_total_tokens=self.prompt_limit + options.max_new_tokens)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (cfg.pad_token_id or 0)
        plan = SlotPlan(cfg, tuple((g.config, g.adapter_config) for g in guides), options.slots, length,
                        options.top_k, int(pad_id))
        slots = DecodeSlots(plan, engine.decode_weights(base), tuple(engine.decode_weights(g) for g in guides),
                            self.k if conditioned_arms(guides) else None, mesh=base.mesh)
        self.scheduler = Scheduler(slots, max_queue=options.max_queue, eos_ids=cfg.eos_token_ids, pad_id=int(pad_id))
        self._seeds = np.random.default_rng(options.seed)
        self.created = int(time.time())

    def start(self) -> None:
        """Compiles the decode step and the shortest prompt bucket, then starts the device loop."""
        self.scheduler.warm_up(BUCKET)
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def models(self) -> list[dict]:
        """OpenAI's model objects, with the objectives (α order) and the default α of each."""
        entry = {"object": "model", "created": self.created, "owned_by": "uniarm_jax"}
        out = []
        if self.guided_id:
            out.append({**entry, "id": self.guided_id, "kind": "guided", "objectives": self.objectives,
                        "default_preference": [float(f"{x:.7g}") for x in self.default_pref]})
        out.append({**entry, "id": self.base_id, "kind": "base", "objectives": [], "default_preference": None})
        return out

    def chat_job(self, body: requests.ChatBody) -> tuple[Job, dict]:
        text = requests.chat_prompt_text(body.messages, self.options.template, self.tokenizer)
        return self._job(body, text, "messages")

    def completion_job(self, body: requests.CompletionBody) -> tuple[Job, dict]:
        text = apply_template(self.options.template, requests.completion_prompt(body), self.tokenizer)
        return self._job(body, text, "prompt")

    def _job(self, body: requests.Body, text: str, prompt_field: str) -> tuple[Job, dict]:
        """The job of a checked request and what its response needs (model, stops, prompt tokens, α)."""
        guided = self.guided_id is not None and body.model == self.guided_id
        if not guided and body.model != self.base_id:
            served = ", ".join(repr(m["id"]) for m in self.models())
            raise RequestError(f"model {body.model!r} is not served here; this server has {served}", "model")
        sampling = requests.checked_sampling(body, max_new_tokens=self.options.max_new_tokens,
                                             temperature=self.options.temperature, top_p=self.options.top_p)
        pref = requests.checked_preference(body.preference, self.k if guided else 0, self.objectives, body.model)
        if guided and pref is None:
            pref = self.default_pref
        ids, length, cut = encode_framed(self.tokenizer, text, self.tokenize)
        if cut:
            raise RequestError(f"the prompt has {length} tokens after its template; this server takes at most "
                               f"{self.prompt_limit} (--max-prompt-tokens)", prompt_field)
        if guided:
            weights = guide_weights(self.guides, pref[None], self.arm_weights, 1)[0]
            base_weight = self.options.base_weight
        else:  # the base alone: every ARM at weight 0
            weights, base_weight = np.zeros(len(self.guides), np.float32), 1.0
        seed = body.seed if body.seed is not None else int(self._seeds.integers(1 << 31))
        job = Job(prompt=ids, bucket=bucket_length(len(ids), BUCKET, 1 << 30), max_tokens=sampling["max_tokens"],
                  base_weight=base_weight, weights=weights,
                  pref=(pref if pref is not None else self.default_pref) if conditioned_arms(self.guides) else None,
                  temperature=sampling["temperature"], top_p=sampling["top_p"], seed=seed,
                  loop=asyncio.get_running_loop())
        return job, {"model": body.model, "stops": sampling["stops"], "prompt_tokens": len(ids),
                     "preference": None if pref is None else [float(f"{x:.7g}") for x in pref]}  # float32's digits
