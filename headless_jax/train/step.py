"""The train step: gradient accumulation over microbatches, AdamW update, non-finite guard — one jit."""
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from headless_jax.train.layout import Layout

TrainState = dict  # {'params', 'opt_state', 'step', 'rng'}: a plain pytree Orbax saves as is
Objective = Callable  # (params, batch, rng, deterministic) -> (loss, metrics)


def split_microbatches(batch: dict, microbatches: int) -> dict:
    """[B, ...] → [M, B/M, ...] taking rows m, m+M, m+2M, … into microbatch m.

    Interleaving keeps every microbatch spread over all batch shards (each shard's contiguous rows split
    evenly), so accumulation moves no data between devices.
    """
    def split(x):
        return jnp.swapaxes(x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def build_train_step(objective: Objective, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                     state_shardings: TrainState, layout: Layout, microbatches: int = 1) -> Callable:
    """Returns `train_step(state, batch) -> (state, metrics)`, jitted with explicit shardings and donated state.

    The loss is the mean over microbatches of each microbatch's loss. A non-finite loss or gradient norm
    (or update) leaves the state untouched (metrics['finite'] = 0); the loop decides whether that stops the run.
    """
    def grads_of(params, microbatch, rng):
        (_, metrics), grads = jax.value_and_grad(lambda p: objective(p, microbatch, rng, False), has_aux=True)(params)
        return grads, metrics

    def train_step(state, batch):  # the name profiles show: PjitFunction(train_step)
        step_rng = jax.random.fold_in(state["rng"], state["step"])
        if microbatches == 1:
            grads, metrics = grads_of(state["params"], batch, step_rng)
        else:
            def accumulate(grad_sum, indexed_microbatch):
                index, microbatch = indexed_microbatch
                grads, metrics = grads_of(state["params"], microbatch, jax.random.fold_in(step_rng, index))
                return jax.tree.map(jnp.add, grad_sum, grads), metrics

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state["params"])
            grad_sum, metrics_M = jax.lax.scan(
                accumulate, zeros, (jnp.arange(microbatches), split_microbatches(batch, microbatches)))
            grads = jax.tree.map(lambda g: g / microbatches, grad_sum)
            metrics = {k: v.sum() if k == "num_predictions" else v.mean() for k, v in metrics_M.items()}

        grad_norm = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(updates))
        params = optax.apply_updates(state["params"], updates)
        new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}
        # A bad update is never applied: the state keeps its last finite value, only the step advances.
        kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        kept["step"] = new_state["step"]
        metrics = dict(metrics, grad_norm=grad_norm, finite=finite.astype(jnp.float32),
                       learning_rate=schedule(state["step"]))
        return kept, metrics

    return jax.jit(train_step, in_shardings=(state_shardings, layout.batch_sharding),
                   out_shardings=(state_shardings, None), donate_argnums=0)


def build_eval_step(objective: Objective, state_shardings: TrainState, layout: Layout, seed: int) -> Callable:
    """Returns `eval_step(params, batch) -> metrics` with a fixed RNG, so evaluations are comparable."""
    rng = jax.random.PRNGKey(seed)

    def eval_step(params, batch):
        return objective(params, batch, rng, True)[1]

    return jax.jit(eval_step, in_shardings=(state_shardings["params"], layout.batch_sharding))
