"""The ARM training loop: `uniarm train CONFIG.yaml [section.key=value ...]`.

One code path from a single CPU to a pod: `jax.distributed` joins the processes (automatic on TPU,
explicit coordinator for GPU/CPU clusters), every process reads only its slice of each global batch
and only its shards of the base weights, and the jitted step runs over the global mesh. Orbax saves
the adapter, optimizer state, data position, step and config asynchronously; a restarted run resumes
from the latest complete checkpoint and continues with the very same batches and random numbers
(the step's rng is `fold_in(seed, step)`, never a carried state).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import orbax.checkpoint as ocp
import yaml

from uniarm_jax.config_files import require, to_dict
from uniarm_jax.data.batches import PreferenceBatches
from uniarm_jax.data.pairs import load_preferences, split_data
from uniarm_jax.data.tokenization import TokenizedPairs, tokenize_pairs
from uniarm_jax.errors import ConfigError, TrainingError
from uniarm_jax.hf.adapter_files import save_adapter
from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer
from uniarm_jax.model.arm import init_adapter
from uniarm_jax.model.sharding import make_mesh
from uniarm_jax.train.config import DistributedSection, RunConfig
from uniarm_jax.train.metrics import MetricsLog, named_metrics
from uniarm_jax.train.step import ArmSteps, check_batch_fits, init_state, make_optimizer


def initialize_distributed(dist: DistributedSection) -> None:
    """Joins a multi-process run. `coordinator_address` (host:port) with `num_processes` and
    `process_id` for GPU/CPU clusters; `auto` lets JAX detect a TPU pod or SLURM job."""
    if dist.auto:
        jax.distributed.initialize()
    elif dist.coordinator_address:
        if dist.cpu_collectives:
            jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
        jax.distributed.initialize(dist.coordinator_address, dist.num_processes, dist.process_id)


def _global_batch(batch: dict, sharding) -> dict:
    """This process's rows -> global arrays sharded over the mesh."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


@dataclasses.dataclass
class TrainingData:
    """What a run trains and evaluates on, tokenised, with its batch iterator."""

    objectives: tuple[str, ...]
    batches: PreferenceBatches
    dev: TokenizedPairs
    micro_batch: int      # pairs per forward (the dev set is read in batches of this size)
    total_steps: int


def prepare_data(config: RunConfig) -> TrainingData:
    """Every process tokenises the (small) text data, then reads only its rows of each batch."""
    data, optim = config.data, config.optim
    train_data = load_preferences(data.train, data.schema, data.objectives, data.max_chars)
    if data.dev:
        dev_data = load_preferences(data.dev, data.schema, train_data.objectives, data.max_chars)
    else:
        parts = split_data(train_data, (1 - data.dev_fraction, data.dev_fraction), data.seed, names=("train", "dev"))
        train_data, dev_data = parts["train"], parts["dev"]
    tokenizer = load_tokenizer(config.model.base)
    tcfg = data.tokenize_config()
    batches = PreferenceBatches(tokenize_pairs(train_data, tokenizer, tcfg), optim.batch_size, seed=data.seed,
                                bucket=data.bucket, process_index=jax.process_index(),
                                process_count=jax.process_count(), group_by_length=data.group_by_length)
    micro = optim.batch_size // optim.micro_batches
    dev = tokenize_pairs(dev_data, tokenizer, tcfg)
    if len(dev) < micro:
        raise ConfigError(f"the dev set has {len(dev)} pairs; evaluation needs at least one micro-batch of {micro}")
    return TrainingData(train_data.objectives, batches, dev, micro,
                        optim.max_steps or optim.epochs * batches.steps_per_epoch)


class Checkpoints:
    """Orbax checkpoints of the train state, the data position and the config, in `out_dir/checkpoints`."""

    def __init__(self, out_dir: str, config: RunConfig):
        self.dir = os.path.join(out_dir, "checkpoints")
        self.config = to_dict(config)
        self.manager = ocp.CheckpointManager(self.dir, options=ocp.CheckpointManagerOptions(
            max_to_keep=config.run.keep, enable_async_checkpointing=True))

    def restore(self, state: dict, batches: PreferenceBatches, log) -> dict:
        """The latest complete checkpoint's state (the data position restored into `batches`), else `state`."""
        step = self.manager.latest_step()
        if step is None:
            return state
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        except ValueError as e:  # orbax's: the saved state's tree or shapes are not this config's
            if "do not match" not in str(e) and "shape" not in str(e):
                raise
            raise ConfigError(f"{self.dir} step {step} holds a train state of another layout than this config's "
                              f"(changed since it was written: {self._changed_keys(step)}); resume with the "
                              "config it was written with, or train into a new run.out_dir") from None
        batches.restore(restored["data"])
        log(f"resumed from {self.dir} step {step}")
        return restored["state"]

    def _changed_keys(self, step: int) -> str:
        saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
        changed = [f"{section}.{key} {saved.get(section, {}).get(key)!r} -> {value!r}"
                   for section, values in self.config.items() if isinstance(values, dict) and section != "run"
                   for key, value in values.items() if saved.get(section, {}).get(key) != value]
        return ", ".join(changed) or "no key"

    def save(self, step: int, state: dict, batches: PreferenceBatches) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        data=ocp.args.JsonSave(batches.state()),
                                                        config=ocp.args.JsonSave(self.config)))

    def stop_on_bad_loss(self, loss: float, step: int) -> None:
        """A NaN/inf loss ends the run; the checkpoints written so far are complete and kept."""
        if not math.isfinite(loss):
            self.manager.wait_until_finished()
            raise TrainingError(f"loss is {loss} at step {step}; training stopped, the last good checkpoint is "
                                f"step {self.manager.latest_step()} in {self.dir}")

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def train(config: RunConfig, log=print) -> dict:
    """Runs (or resumes) the configured training; returns the final dev metrics and output paths."""
    initialize_distributed(config.distributed)
    require(config, ("model.base", "data.train"), "config")
    optim, run = config.optim, config.run
    mesh = make_mesh(**dataclasses.asdict(config.mesh))
    check_batch_fits(optim.batch_size, optim.micro_batches, mesh)
    data = prepare_data(config)
    k = len(data.objectives)
    acfg, ocfg = config.adapter_for(k), config.objective_for(k)

    model = config.model
    base = load_pretrained(model.base, dtype=model.dtype, mesh=mesh, compute_dtype=model.compute_dtype,
                           remat=model.remat, quantize=model.quantize)
    teacher = load_teacher(ocfg.teacher, base, model, mesh)
    params = base.params if teacher is None else (base.params, teacher.params)
    # a plain LoRA (GenARM) has no preference parameters: its optimizer is AdamW alone at any ratio,
    # so its state (and its checkpoints) do not depend on the ratio
    optimizer, schedule = make_optimizer(optim.learning_rate, optim.warmup_steps, data.total_steps,
                                         optim.weight_decay, optim.grad_clip,
                                         optim.preference_lr_ratio if acfg.takes_pref else 1.0)
    steps = ArmSteps(base.config, acfg, ocfg, optimizer, mesh, optim.micro_batches,
                     teacher=None if teacher is None else teacher.config)
    state = jax.device_put(init_state(init_adapter(base, acfg, seed=run.seed).adapter, optimizer), steps.replicated)

    out_dir = os.path.abspath(run.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    checkpoints = Checkpoints(out_dir, config)
    state = checkpoints.restore(state, data.batches, log)
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(to_dict(config), f, sort_keys=False)
    metrics_log = MetricsLog(out_dir, run.tensorboard, int(state["step"]))
    progress = None
    if run.progress and jax.process_index() == 0:
        from tqdm import tqdm
        progress = tqdm(total=data.total_steps, initial=int(state["step"]), desc="train", dynamic_ncols=True)

    def dev_metrics(state):
        return evaluate(steps, state, params, data.dev, data.micro_batch, data.objectives, config.data.bucket)

    rng = jax.random.key(run.seed)
    step, last_dev = int(state["step"]), {}
    try:
        if step == 0:  # the untrained ARM (its base) as the baseline of every dev curve
            metrics_log.write(0, "dev", dev_metrics(state))
        while step < data.total_steps:
            start = time.perf_counter()
            batch = next(data.batches)
            tokens = int((batch["segments"] >= 0).sum()) * jax.process_count()
            state, metrics = steps.train_step(state, params, _global_batch(batch, steps.batch_sharding), rng)
            metrics = named_metrics(metrics, data.objectives)
            step += 1
            checkpoints.stop_on_bad_loss(metrics["loss"], step)
            seconds = time.perf_counter() - start
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{tokens / seconds:.0f}")
            last = step == data.total_steps
            if step % run.log_every == 0 or last:
                metrics_log.write(step, "train", dict(metrics, tokens_per_s=tokens / seconds,
                                                      lr=float(schedule(step - 1))))
            if step % run.eval_every == 0 or last:
                last_dev = dev_metrics(state)
                metrics_log.write(step, "dev", last_dev)
            if step % run.save_every == 0 or last:
                checkpoints.save(step, state, data.batches)
    finally:
        checkpoints.close()
        metrics_log.close()
        if progress is not None:
            progress.close()
    adapter_dir = os.path.join(out_dir, "adapter")
    if jax.process_index() == 0:
        learnt = [data.objectives[ocfg.objective]] if ocfg.method == "genarm" else data.objectives
        save_adapter(dataclasses.replace(base, adapter_config=acfg, adapter=state["adapter"]), adapter_dir, learnt)
    return {"step": step, "dev": last_dev, "adapter": adapter_dir, "out_dir": out_dir}


def load_teacher(path: str | None, base, model, mesh):
    """The frozen teacher of token-level distillation (None without one), loaded as the base is; its
    next-token distributions must be over the base's tokens (the same tokenizer)."""
    if path is None:
        return None
    path = os.path.expanduser(path)
    if load_tokenizer(path).get_vocab() != load_tokenizer(base.path).get_vocab():
        raise ConfigError(f"objective.teacher {path} has another tokenizer than the base {base.path}; token-level "
                          "distillation compares next-token distributions over the same tokens")
    teacher = load_pretrained(path, dtype=model.dtype, mesh=mesh, compute_dtype=model.compute_dtype,
                              quantize=model.quantize)
    if teacher.config.vocab_size != base.config.vocab_size:
        raise ConfigError(f"objective.teacher {path} has {teacher.config.vocab_size} logits per token; the base "
                          f"{base.path} has {base.config.vocab_size}")
    return teacher


def evaluate(steps, state, params, dev_tokens, batch_size, objectives, bucket) -> dict:
    """Mean metrics over the dev set (full batches, fixed order, fixed α draws)."""
    batches = PreferenceBatches(dev_tokens, batch_size, shuffle=False, bucket=bucket, num_epochs=1,
                                process_index=jax.process_index(), process_count=jax.process_count())
    totals, count = {}, 0
    for batch in batches:
        metrics = named_metrics(steps.eval_step(state, params, _global_batch(batch, steps.batch_sharding),
                                                jax.random.key(count)), objectives)
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + v
        count += 1
    return {k: v / count for k, v in totals.items()}
