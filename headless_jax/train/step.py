"""The train step: gradient accumulation over microbatches, AdamW update, non-finite guard — one jit."""
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from headless_jax.model import embedding_matrix, with_embedding
from headless_jax.train.layout import Layout
from headless_jax.train.sparse_embedding import SparseEmbeddingOptimizer, gather_rows, touched_rows

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


def build_train_step(objective: Objective, optimizer: optax.GradientTransformation | SparseEmbeddingOptimizer,
                     schedule: optax.Schedule, state_shardings: TrainState, layout: Layout, microbatches: int = 1,
                     rows_read: Callable | None = None) -> Callable:
    """Returns `train_step(state, batch) -> (state, metrics)`, jitted with explicit shardings and donated state.

    The loss is the mean over microbatches of each microbatch's loss. A non-finite loss or gradient norm leaves the
    state untouched (metrics['finite'] = 0); the loop decides whether that stops the run. (The norm alone decides:
    AdamW's update of finite gradients is finite, and a check of the update would be another pass over it.)
    With a SparseEmbeddingOptimizer, `rows_read` (objectives.build_rows_read) names the rows of E the step reads:
    the loss is differentiated with respect to those rows instead of E, and only they are updated.
    """
    sparse = isinstance(optimizer, SparseEmbeddingOptimizer)

    def grads_of(params, microbatch, rng, rows_U):
        rows = {"embedding_rows_U": rows_U} if sparse else {}
        (_, metrics), grads = jax.value_and_grad(lambda p: objective(p, microbatch, rng, False, **rows),
                                                 has_aux=True)(params)
        return grads, metrics

    def step_rows(batch, step_rng) -> jax.Array:
        """The rows of E every microbatch of the step reads (each with its own rng, as grads_of sees it)."""
        if microbatches == 1:
            return rows_read(batch, step_rng)
        read = jax.vmap(lambda i, microbatch: rows_read(microbatch, jax.random.fold_in(step_rng, i)))
        return read(jnp.arange(microbatches), split_microbatches(batch, microbatches)).reshape(-1)

    def train_step(state, batch):  # the name profiles show: PjitFunction(train_step)
        step_rng = jax.random.fold_in(state["rng"], state["step"])
        params, rows_U = state["params"], None
        if sparse:  # differentiate with respect to the rows of E the step reads (a static bound: its token count)
            embedding_VxD = embedding_matrix(params)
            rows_U = touched_rows(step_rows(batch, step_rng), embedding_VxD.shape[0])
            params = with_embedding(params, gather_rows(embedding_VxD, rows_U))
        if microbatches == 1:
            grads, metrics = grads_of(params, batch, step_rng, rows_U)
        else:
            def accumulate(grad_sum, indexed_microbatch):
                index, microbatch = indexed_microbatch
                grads, metrics = grads_of(params, microbatch, jax.random.fold_in(step_rng, index), rows_U)
                return jax.tree.map(jnp.add, grad_sum, grads), metrics

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
            grad_sum, metrics_M = jax.lax.scan(
                accumulate, zeros, (jnp.arange(microbatches), split_microbatches(batch, microbatches)))
            grads = jax.tree.map(lambda g: g / microbatches, grad_sum)
            metrics = {k: v.sum() if k == "num_predictions" else v.mean() for k, v in metrics_M.items()}

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        # A bad update is never applied: the state keeps its last finite value, only the step advances.
        if sparse:  # guarded inside, by rows for E
            params, opt_state = optimizer.apply(grads, state["opt_state"], state["params"], rows_U, finite)
            kept = {"params": params, "opt_state": opt_state, "rng": state["rng"]}
        else:
            updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
            new_state = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
                         "rng": state["rng"]}
            kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                                {k: state[k] for k in new_state})
        kept["step"] = state["step"] + 1
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
