"""The sharded ARM train and eval steps: AdamW on the adapter only, gradient accumulation in the step.

Train state = `{"step", "adapter", "opt"}`; the frozen base weights are an argument, never part of the
state, so the optimizer holds nothing for them and checkpoints stay adapter-sized. Distillation from a
teacher (`objective.teacher`) takes the pair `(base weights, teacher weights)` as that argument. The step is one
`jax.jit` with explicit in/out shardings on the `data x fsdp x tensor` mesh: base weights as their
logical axes say, the batch over data (and fsdp), the small adapter state replicated.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from uniarm_jax.errors import ConfigError
from uniarm_jax.model.adapters import PREFERENCE_PARAMS, AdapterConfig
from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.llama import Llama
from uniarm_jax.model.sharding import param_shardings
from uniarm_jax.train.losses import ObjectiveConfig, model_distil_fn, model_logprob_fn, objective_loss


def make_optimizer(learning_rate: float, warmup_steps: int, total_steps: int, weight_decay: float,
                   grad_clip: float | None, preference_lr_ratio: float = 1.0
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warm-up and cosine decay to 0 (docs/methods.md §1.4), global-norm clipping first (our
    choice), and the preference parameters (PREFERENCE_PARAMS) at `preference_lr_ratio` times the rate: their
    gradient passes through the adapter's zero-initialised output factor, so at one rate they stay near
    their start and the ARM barely responds to α (docs/methods.md §1.4). Returns the optimizer and its
    learning-rate schedule (for logging)."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                                  max(total_steps, warmup_steps + 1), end_value=0.0)
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
    parts.append(optax.adamw(schedule, weight_decay=weight_decay))
    if preference_lr_ratio != 1.0:  # AdamW's whole update (decay included) scaled: the rate times the ratio
        parts.append(optax.masked(optax.scale(preference_lr_ratio), preference_mask))
    return optax.chain(*parts), schedule


def preference_mask(adapter: dict) -> dict:
    """True at the adapter's preference parameters (PREFERENCE_PARAMS)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key in PREFERENCE_PARAMS, adapter)


def init_state(adapter: dict, optimizer: optax.GradientTransformation) -> dict:
    return {"step": jnp.zeros((), jnp.int32), "adapter": adapter, "opt": optimizer.init(adapter)}


def data_parallelism(mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_fits(batch_size: int, micro_batches: int, mesh) -> None:
    """Every micro-batch must split evenly over the data-parallel devices."""
    dp = data_parallelism(mesh)
    if micro_batches < 1 or batch_size % micro_batches:
        raise ConfigError(f"batch_size={batch_size} does not divide into micro_batches={micro_batches}")
    if (batch_size // micro_batches) % dp:
        raise ConfigError(f"a micro-batch of {batch_size // micro_batches} pairs (batch_size={batch_size} / "
                          f"micro_batches={micro_batches}) does not divide over the {dp} data-parallel devices "
                          f"(mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']})")


class ArmSteps:
    """Compiled train and eval steps for one model, adapter, objective, optimizer and mesh (and the
    teacher's config when the objective distils from one)."""

    def __init__(self, cfg: LlamaConfig, acfg: AdapterConfig, ocfg: ObjectiveConfig,
                 optimizer: optax.GradientTransformation, mesh, micro_batches: int = 1,
                 teacher: LlamaConfig | None = None):
        if (teacher is None) != (ocfg.teacher is None):
            raise ValueError("ArmSteps needs the teacher's config exactly when the objective names a teacher")
        self.cfg, self.acfg, self.ocfg, self.optimizer = cfg, acfg, ocfg, optimizer
        self.mesh, self.micro_batches = mesh, micro_batches
        self.model = Llama(cfg, acfg)
        self.teacher = None if teacher is None else Llama(teacher)
        self.replicated = NamedSharding(mesh, P())

        # every batch array is [batch, ...]: rows over data (and fsdp), the rest replicated
        self.batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))

    # the loss of one micro-batch --------------------------------------------------------------------
    def _loss(self, adapter, params, batch, rng, deterministic):
        alpha_rng, dropout_rng = jax.random.split(rng)
        if self.teacher is None:
            fn = model_logprob_fn(self.model, {"params": params, "adapter": adapter}, deterministic, dropout_rng)
        else:
            fn = model_distil_fn(self.model, {"params": params[0], "adapter": adapter}, self.teacher, params[1],
                                 deterministic, dropout_rng)
        return objective_loss(fn, batch, alpha_rng, self.ocfg)

    def _train_step(self, state, params, batch, rng):
        m = self.micro_batches
        # Strided micro-batches: row r goes to micro-batch r % m, so each stays spread over all devices.
        micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape((x.shape[0] // m, m) + x.shape[1:]), 0, 1), batch)
        rngs = jax.random.split(jax.random.fold_in(rng, state["step"]), m)
        grad_fn = jax.value_and_grad(functools.partial(self._loss, deterministic=False), has_aux=True)

        def accumulate(carry, xs):
            mb, key = xs
            (loss, metrics), grads = grad_fn(state["adapter"], params, mb, key)
            return jax.tree.map(jnp.add, carry, (grads, loss, metrics)), None

        (loss_shape, metrics_shape), grads_shape = jax.eval_shape(
            grad_fn, state["adapter"], params, jax.tree.map(lambda x: x[0], micro), rngs[0])
        init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (grads_shape, loss_shape, metrics_shape))
        total, _ = jax.lax.scan(accumulate, init, (micro, rngs))
        grads, loss, metrics = jax.tree.map(lambda x: x / m, total)
        updates, opt = self.optimizer.update(grads, state["opt"], state["adapter"])
        adapter = optax.apply_updates(state["adapter"], updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        return {"step": state["step"] + 1, "adapter": adapter, "opt": opt}, metrics

    def _eval_step(self, state, params, batch, rng):
        loss, metrics = self._loss(state["adapter"], params, batch, rng, deterministic=True)
        return dict(metrics, loss=loss)

    # compiled entry points (built on first use, when the trees' structures are known) -------------
    def _shardings(self, state, params):
        weights = param_shardings(self.mesh, params, self.cfg.head_dim) if self.teacher is None else (
            param_shardings(self.mesh, params[0], self.cfg.head_dim),
            param_shardings(self.mesh, params[1], self.teacher.cfg.head_dim))
        return jax.tree.map(lambda _: self.replicated, state), weights, self.batch_sharding, self.replicated

    @functools.cached_property
    def _jitted(self):
        return {}

    def train_step(self, state, params, batch, rng):
        """`(new_state, metrics)`; `state` is donated. Recompiles only for a new batch shape."""
        # A fresh state (from `init_state`) is placed like the step's output, so the second call does
        # not compile again for a different input placement; for later calls this is a no-op.
        state = jax.device_put(state, self.replicated)
        if "train" not in self._jitted:
            shardings = self._shardings(state, params)
            self._jitted["train"] = jax.jit(self._train_step, donate_argnums=(0,), in_shardings=shardings,
                                            out_shardings=(shardings[0], self.replicated))
        return self._jitted["train"](state, params, batch, rng)

    def eval_step(self, state, params, batch, rng):
        """Metrics of `batch` without dropout (and without touching the state)."""
        if "eval" not in self._jitted:
            self._jitted["eval"] = jax.jit(self._eval_step, in_shardings=self._shardings(state, params),
                                           out_shardings=self.replicated)
        return self._jitted["eval"](state, params, batch, rng)
