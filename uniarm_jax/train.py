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
import json
import math
import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import yaml

from uniarm_jax.adapters import AdapterConfig
from uniarm_jax.arm import init_adapter, save_adapter
from uniarm_jax.batches import PreferenceBatches
from uniarm_jax.data import load_preferences, split_data
from uniarm_jax.errors import ConfigError, TrainingError
from uniarm_jax.losses import ObjectiveConfig
from uniarm_jax.pretrained import load_pretrained, load_tokenizer
from uniarm_jax.sharding import make_mesh
from uniarm_jax.tokenization import TokenizeConfig, tokenize_pairs
from uniarm_jax.train_step import ArmSteps, check_batch_fits, init_state, make_optimizer


def initialize_distributed(dist: dict) -> None:
    """Joins a multi-process run. `coordinator_address` (host:port) with `num_processes` and
    `process_id` for GPU/CPU clusters; `auto` lets JAX detect a TPU pod or SLURM job."""
    if dist.get("auto"):
        jax.distributed.initialize()
    elif dist.get("coordinator_address"):
        if dist.get("cpu_collectives"):
            jax.config.update("jax_cpu_collectives_implementation", dist["cpu_collectives"])
        jax.distributed.initialize(dist["coordinator_address"], dist["num_processes"], dist["process_id"])


def mesh_from(cfg: dict):
    """The configured mesh; one axis may be -1, meaning all devices the others leave."""
    sizes = {axis: int(cfg[axis]) for axis in ("data", "fsdp", "tensor")}
    free = [a for a, n in sizes.items() if n == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh {sizes}: at most one axis may be -1")
    if free:
        rest = math.prod(n for n in sizes.values() if n != -1)
        if jax.device_count() % rest:
            raise ConfigError(f"mesh {sizes}: the fixed axes ({rest} devices) do not divide the "
                              f"{jax.device_count()} devices available")
        sizes[free[0]] = jax.device_count() // rest
    return make_mesh(**sizes)


def build_objective(config: dict, num_objectives: int) -> ObjectiveConfig:
    ocfg = ObjectiveConfig(**{**config["objective"], "betas": tuple(config["objective"]["betas"])})
    if ocfg.num_objectives != num_objectives:
        raise ConfigError(f"objective.betas has {ocfg.num_objectives} values; the data has {num_objectives} "
                          "objectives (one beta each)")
    return ocfg


def build_adapter(config: dict, num_objectives: int) -> AdapterConfig:
    a = dict(config["adapter"], targets=tuple(config["adapter"]["targets"]), num_objectives=num_objectives)
    return AdapterConfig(**a)


class MetricsLog:
    """Metrics as JSON lines (and TensorBoard scalars), written by process 0 only."""

    def __init__(self, out_dir: str, tensorboard: bool):
        self.active = jax.process_index() == 0
        self.file = open(os.path.join(out_dir, "metrics.jsonl"), "a") if self.active else None
        self.tb = None
        if self.active and tensorboard:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.active:
            return
        self.file.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def named_metrics(metrics: dict, objectives: tuple) -> dict:
    """Flattens per-objective metric vectors into `accuracy/helpful`-style scalars."""
    out = {}
    for name, value in jax.device_get(metrics).items():
        value = np.asarray(value)
        if value.ndim == 0:
            out[name] = float(value)
        else:
            out.update({f"{name}/{obj}": float(v) for obj, v in zip(objectives, value)})
    return out


def _global_batch(batch: dict, sharding) -> dict:
    """This process's rows -> global arrays sharded over the mesh."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def train(config: dict, log=print) -> dict:
    """Runs (or resumes) the configured training; returns the final dev metrics and output paths."""
    initialize_distributed(config["distributed"])
    model_cfg, data_cfg, optim, run = config["model"], config["data"], config["optim"], config["run"]
    for section, key in (("model", "base"), ("data", "train")):
        if not config[section][key]:
            raise ConfigError(f"{section}.{key} is not set; give it in the YAML file or as {section}.{key}=...")
    mesh = mesh_from(config["mesh"])
    check_batch_fits(optim["batch_size"], optim["micro_batches"], mesh)

    # data: every process tokenises the (small) text data, then reads only its rows of each batch
    train_data = load_preferences(data_cfg["train"], data_cfg["schema"], data_cfg["objectives"], data_cfg["max_chars"])
    if data_cfg["dev"]:
        dev_data = load_preferences(data_cfg["dev"], data_cfg["schema"], train_data.objectives, data_cfg["max_chars"])
    else:
        parts = split_data(train_data, (1 - data_cfg["dev_fraction"], data_cfg["dev_fraction"]), data_cfg["seed"],
                           names=("train", "dev"))
        train_data, dev_data = parts["train"], parts["dev"]
    objectives = train_data.objectives
    ocfg, acfg = build_objective(config, len(objectives)), build_adapter(config, len(objectives))
    tokenizer = load_tokenizer(model_cfg["base"])
    tcfg = TokenizeConfig(template=data_cfg["template"], max_prompt_tokens=data_cfg["max_prompt_tokens"],
                          max_total_tokens=data_cfg["max_total_tokens"])
    procs = dict(process_index=jax.process_index(), process_count=jax.process_count())
    batches = PreferenceBatches(tokenize_pairs(train_data, tokenizer, tcfg), optim["batch_size"],
                                seed=data_cfg["seed"], bucket=data_cfg["bucket"], **procs)
    micro = optim["batch_size"] // optim["micro_batches"]
    dev_tokens = tokenize_pairs(dev_data, tokenizer, tcfg)
    if len(dev_tokens) < micro:
        raise ConfigError(f"the dev set has {len(dev_tokens)} pairs; evaluation needs at least one micro-batch "
                          f"of {micro}")
    total_steps = optim["max_steps"] or optim["epochs"] * batches.steps_per_epoch

    base = load_pretrained(model_cfg["base"], dtype=model_cfg["dtype"], mesh=mesh,
                           compute_dtype=model_cfg["compute_dtype"], remat=model_cfg["remat"])
    optimizer, schedule = make_optimizer(optim["learning_rate"], optim["warmup_steps"], total_steps, optim["weight_decay"],
                               optim["grad_clip"])
    steps = ArmSteps(base.config, acfg, ocfg, optimizer, mesh, optim["micro_batches"])
    state = init_state(init_adapter(base, acfg, seed=run["seed"]).adapter, optimizer)
    state = jax.device_put(state, steps.replicated)

    out_dir = os.path.abspath(run["out_dir"])
    os.makedirs(out_dir, exist_ok=True)
    manager = ocp.CheckpointManager(os.path.join(out_dir, "checkpoints"), options=ocp.CheckpointManagerOptions(
        max_to_keep=run["keep"], enable_async_checkpointing=True))
    if manager.latest_step() is not None:
        step = manager.latest_step()
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        state = restored["state"]
        batches.restore(restored["data"])
        log(f"resumed from {out_dir}/checkpoints step {step}")
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)

    def save(step):
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   data=ocp.args.JsonSave(batches.state()),
                                                   config=ocp.args.JsonSave(config)))

    metrics_log = MetricsLog(out_dir, run["tensorboard"])
    rng = jax.random.key(run["seed"])
    step = int(state["step"])
    progress = None
    if run["progress"] and jax.process_index() == 0:
        from tqdm import tqdm
        progress = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True)
    dev_metrics = {}
    try:
        if step == 0:  # the untrained ARM (its base) as the baseline of every dev curve
            metrics_log.write(0, "dev", evaluate(steps, state, base.params, dev_tokens, micro, objectives,
                                                 data_cfg["bucket"]))
        while step < total_steps:
            start = time.perf_counter()
            batch = next(batches)
            tokens = int(batch["attention_mask"].sum()) * jax.process_count()
            state, metrics = steps.train_step(state, base.params, _global_batch(batch, steps.batch_sharding), rng)
            metrics = named_metrics(metrics, objectives)
            step += 1
            if not math.isfinite(metrics["loss"]):
                manager.wait_until_finished()
                raise TrainingError(f"loss is {metrics['loss']} at step {step}; training stopped, the last good "
                                    f"checkpoint is step {manager.latest_step()} in {out_dir}/checkpoints")
            seconds = time.perf_counter() - start
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{tokens / seconds:.0f}")
            if step % run["log_every"] == 0 or step == total_steps:
                metrics_log.write(step, "train", dict(metrics, tokens_per_s=tokens / seconds,
                                                      lr=float(schedule(step - 1))))
            if step % run["eval_every"] == 0 or step == total_steps:
                dev_metrics = evaluate(steps, state, base.params, dev_tokens, micro, objectives, data_cfg["bucket"])
                metrics_log.write(step, "dev", dev_metrics)
            if step % run["save_every"] == 0 or step == total_steps:
                save(step)
        manager.wait_until_finished()
    finally:
        manager.close()
        metrics_log.close()
        if progress is not None:
            progress.close()
    adapter_dir = os.path.join(out_dir, "adapter")
    if jax.process_index() == 0:
        learnt = [objectives[ocfg.objective]] if ocfg.method == "genarm" else objectives
        save_adapter(dataclasses.replace(base, adapter_config=acfg, adapter=state["adapter"]), adapter_dir, learnt)
    return {"step": step, "dev": dev_metrics, "adapter": adapter_dir, "out_dir": out_dir}


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
