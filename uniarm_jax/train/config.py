"""The run config of `uniarm train`: typed sections, each a frozen dataclass whose fields are its valid
keys. YAML files in `configs/` (which may `inherit:` another) plus `section.key=value` overrides, read
by the project's one config loader (`config_files.py`). The adapter and objective sections are the
library's own `AdapterConfig` and `ObjectiveConfig`, so their defaults and checks are written once.
"""

from __future__ import annotations

import dataclasses

from uniarm_jax import defaults
from uniarm_jax.config_files import DERIVED, load_config
from uniarm_jax.data.tokenization import TokenizeConfig
from uniarm_jax.errors import ConfigError
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.quantize import check_quantize
from uniarm_jax.train.losses import ObjectiveConfig


@dataclasses.dataclass(frozen=True)
class ModelSection:
    base: str | None = None             # Hugging Face directory of the ARM's base (and initialisation)
    dtype: str = defaults.DTYPE         # parameter dtype of the frozen base
    compute_dtype: str | None = None    # matmul dtype (default: dtype); loss and softmax are float32
    remat: bool = False                 # recompute decoder layers in the backward pass
    quantize: str | None = None         # "int8": int8 projection kernels for the frozen base (QLoRA-style)

    def __post_init__(self):
        check_quantize(self.quantize, "model.quantize")


@dataclasses.dataclass(frozen=True)
class DataSection:
    train: str | None = None            # local json / jsonl / parquet file
    dev: str | None = None              # optional; else carved out of `train` by `dev_fraction`
    schema: str = "pku"
    template: str = "pku"
    objectives: tuple[str, ...] | None = None  # names to train on, in order (default: all the data has)
    max_prompt_tokens: int = defaults.MAX_PROMPT_TOKENS
    max_total_tokens: int = defaults.MAX_TOTAL_TOKENS
    max_chars: int | None = None
    dev_fraction: float = 0.05
    bucket: int = 64
    group_by_length: bool = False       # batches of pairs of like length (less padding), HF's group_by_length
    seed: int = 0

    def tokenize_config(self) -> TokenizeConfig:
        return TokenizeConfig(template=self.template, max_prompt_tokens=self.max_prompt_tokens,
                              max_total_tokens=self.max_total_tokens)


@dataclasses.dataclass(frozen=True)
class OptimSection:
    """PARM's reference settings (docs/methods.md §2)."""

    learning_rate: float = 5e-4
    warmup_steps: int = 20
    weight_decay: float = 0.05
    grad_clip: float | None = 1.0
    preference_lr_ratio: float = 1.0    # the rate of the parameters α acts through, over learning_rate
    batch_size: int = 32                # global batch (pairs) per optimizer step
    micro_batches: int = 1              # gradient accumulation: batch_size / micro_batches pairs per forward
    epochs: int = 2
    max_steps: int | None = None

    def __post_init__(self):
        if not self.preference_lr_ratio > 0:
            raise ConfigError(f"optim.preference_lr_ratio is {self.preference_lr_ratio}; expected a positive "
                              "multiple of optim.learning_rate")


@dataclasses.dataclass(frozen=True)
class MeshSection:
    data: int = -1                      # -1: all devices the other axes leave
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs/default"
    seed: int = 0
    save_every: int = 100
    keep: int = 3
    eval_every: int = 100
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class DistributedSection:
    auto: bool = False                  # TPU pods, SLURM: let jax.distributed find the other processes
    coordinator_address: str | None = None  # GPU / CPU clusters: host:port of process 0
    num_processes: int | None = None
    process_id: int | None = None
    cpu_collectives: str = "gloo"       # CPU processes only


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: ModelSection = ModelSection()
    adapter: AdapterConfig = dataclasses.field(default_factory=AdapterConfig,
                                               metadata={DERIVED: ("num_objectives",)})
    objective: ObjectiveConfig = ObjectiveConfig()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    mesh: MeshSection = MeshSection()
    run: RunSection = RunSection()
    distributed: DistributedSection = DistributedSection()

    def adapter_for(self, num_objectives: int) -> AdapterConfig:
        """The adapter section for the data's k objectives."""
        return dataclasses.replace(self.adapter, num_objectives=num_objectives)

    def objective_for(self, num_objectives: int) -> ObjectiveConfig:
        """The objective section, checked to give one β per objective of the data."""
        if self.objective.num_objectives != num_objectives:
            raise ConfigError(f"objective.betas has {self.objective.num_objectives} values; the data has "
                              f"{num_objectives} objectives (one beta each)")
        return self.objective


def load_run_config(path: str | None, overrides=()) -> RunConfig:
    """Defaults, then the YAML file (which may `inherit:` another file beside it), then overrides."""
    return load_config(RunConfig, path, overrides, source="command line")
