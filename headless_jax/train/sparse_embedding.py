"""Sparse AdamW on the word embedding E [V,D] of a headless model (`optim.embedding_update=sparse`).

A headless model's loss reads E only at the rows of the step's tokens (its inputs and its CWT targets): the
gradient of every other row is exactly zero. The train step then differentiates the loss with respect to those
rows alone (`touched_rows`: at most the step's token count, a static bound) and this module updates them, so that no
work in the step is proportional to V beyond E and its two moment buffers themselves.

Semantics, against dense AdamW (optax.adamw, decoupled weight decay): a row's missed updates (the k steps since it
was last read, in which its gradient was zero) are caught up when it is next read, in O(1) work:
- its moments exactly: m ← β1^k·m, v ← β2^k·v;
- its weight decay exactly: p ← p·Π(1 − lr_τ·wd) over those steps (a running sum of log(1 − lr·wd),
  Kahan-compensated so that float32 holds it over millions of steps);
- the steps its decaying momentum would have made (m̂/(√v̂+ε) is not zero with a zero gradient) in closed form, at
  this step's learning rate and bias corrections, without ε and without the weight decay of the distance moved:
  the one approximation, exact at a constant rate late in a run (bias corrections ≈ 1) with ε ≪ √v̂ and no
  weight decay;
then this step's AdamW update, with the global step count. A row read in every step gets exactly dense AdamW's
update, so when every row is in every step, sparse and dense are the same.
"""
import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from headless_jax.model import embedding_matrix, with_embedding, without_embedding


class SparseEmbeddingState(NamedTuple):
    count: jax.Array  # updates applied so far (optax's count: the t of the bias corrections, the schedule's step)
    mu_VxD: jax.Array  # first moment of each row as of its last update
    nu_VxD: jax.Array  # second moment, likewise
    updated_at_V: jax.Array  # int32: the count at the row's last update (0: never updated)
    decay_log: jax.Array  # Σ over the updates so far of log(1 − lr·wd)
    decay_log_error: jax.Array  # its Kahan compensation
    decay_log_at_V: jax.Array  # decay_log at the row's last update


def init(embedding_VxD) -> SparseEmbeddingState:
    """Zero moments shaped (and, for a boxed E, laid out) as E; the per-row counters replicated ([V] each)."""
    rows = (embedding_VxD.value if isinstance(embedding_VxD, nn.meta.AxisMetadata) else embedding_VxD).shape[0]
    zeros = jax.tree.map(jnp.zeros_like, embedding_VxD)
    scalar = jnp.zeros((), jnp.float32)
    return SparseEmbeddingState(jnp.zeros((), jnp.int32), zeros, zeros, jnp.zeros((rows,), jnp.int32), scalar, scalar,
                                jnp.zeros((rows,), jnp.float32))


def touched_rows(ids_N: jax.Array, vocab_size: int) -> jax.Array:
    """The distinct ids among `ids_N`, sorted, padded to a static min(N, V) rows with `vocab_size` (a row that does
    not exist: reads of it give zeros, writes to it are dropped)."""
    return jnp.unique(ids_N, size=min(ids_N.shape[0], vocab_size), fill_value=vocab_size)


def gather_rows(x_V: jax.Array, rows_U: jax.Array) -> jax.Array:
    """The rows `rows_U` of a [V, ...] array; the padding row V reads as zeros."""
    return x_V.at[rows_U].get(mode="fill", fill_value=0)


def update(state: SparseEmbeddingState, embedding_VxD: jax.Array, rows_U: jax.Array, grads_UxD: jax.Array,
           learning_rate: optax.Schedule, b1: float, b2: float, eps: float, weight_decay: float,
           finite: jax.Array | bool = True) -> tuple[jax.Array, SparseEmbeddingState]:
    """(E, state) after one AdamW update of `rows_U` (from touched_rows) with their gradients `grads_UxD`; with
    `finite` False, E and the state as they were (the rows are not written: no pass over E)."""
    t = state.count + 1
    lr = learning_rate(state.count)  # as optax.scale_by_learning_rate: the schedule at the count before this update
    missed_U = (t - 1 - gather_rows(state.updated_at_V, rows_U)).astype(jnp.float32)
    last_mu_UxD, last_nu_UxD = gather_rows(state.mu_VxD, rows_U), gather_rows(state.nu_VxD, rows_U)
    missed_decay_U = state.decay_log - gather_rows(state.decay_log_at_V, rows_U)
    p_UxD = gather_rows(embedding_VxD, rows_U) * jnp.exp(missed_decay_U)[:, None].astype(embedding_VxD.dtype)
    # the missed momentum steps: at the j-th, m̂/√v̂ = r^j·m/√v with r = β1/√β2 (the gradient was zero), so they sum
    # to r(1 − r^k)/(1 − r)·m/√v, taken at this step's learning rate and bias corrections, without ε
    r = b1 / b2 ** 0.5
    momentum_steps_U = missed_U if r == 1 else r * (1 - r ** missed_U) / (1 - r)
    direction_UxD = jnp.where(last_nu_UxD > 0, last_mu_UxD / jnp.sqrt(jnp.where(last_nu_UxD > 0, last_nu_UxD, 1)), 0)
    scale = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    p_UxD = p_UxD - scale * momentum_steps_U[:, None] * direction_UxD
    mu_UxD = b1 ** missed_U[:, None] * last_mu_UxD
    nu_UxD = b2 ** missed_U[:, None] * last_nu_UxD

    mu_UxD = b1 * mu_UxD + (1 - b1) * grads_UxD
    nu_UxD = b2 * nu_UxD + (1 - b2) * grads_UxD ** 2
    mu_hat_UxD = mu_UxD / (1 - b1 ** t)  # the bias corrections as optax computes them (an integer power)
    nu_hat_UxD = nu_UxD / (1 - b2 ** t)
    p_UxD = p_UxD - lr * (mu_hat_UxD / (jnp.sqrt(nu_hat_UxD) + eps) + weight_decay * p_UxD)

    decay_log, decay_log_error = _kahan_add(state.decay_log, state.decay_log_error, jnp.log1p(-lr * weight_decay))
    written_U = jnp.where(finite, rows_U, embedding_VxD.shape[0])  # an update not applied writes no row
    scatter = lambda x, rows: x.at[written_U].set(rows, mode="drop")  # noqa: E731 — padding rows are dropped
    kept = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    new_state = SparseEmbeddingState(
        kept(t, state.count), scatter(state.mu_VxD, mu_UxD), scatter(state.nu_VxD, nu_UxD),
        scatter(state.updated_at_V, t), kept(decay_log, state.decay_log), kept(decay_log_error, state.decay_log_error),
        scatter(state.decay_log_at_V, decay_log))
    return scatter(embedding_VxD, p_UxD.astype(embedding_VxD.dtype)), new_state


def _kahan_add(total, error, value):
    corrected = value - error
    new_total = total + corrected
    return new_total, (new_total - total) - corrected


@dataclasses.dataclass(frozen=True)
class SparseEmbeddingOptimizer:
    """AdamW with E updated by rows: optax's AdamW (unclipped) on every other parameter, `update` on E, and one
    global-norm clip over both, as optax.clip_by_global_norm computes it. The state is
    {'dense': the optax state of the other parameters, 'embedding': SparseEmbeddingState}."""
    dense: optax.GradientTransformation
    schedule: optax.Schedule
    b1: float
    b2: float
    eps: float
    weight_decay: float  # of E (0 unless optim.decay_embeddings)
    grad_clip: float

    def init(self, params) -> dict:
        return {"dense": self.dense.init(without_embedding(params)), "embedding": init(embedding_matrix(params))}

    def apply(self, grads, opt_state: dict, params, rows_U: jax.Array, finite: jax.Array) -> tuple[dict, dict]:
        """(params, opt_state) after one update, or as they were where `finite` is False (the non-finite guard:
        E's rows are then not written, so the guard makes no pass over E). `grads` holds the gradients of E's
        rows [U,D] in E's place."""
        if self.grad_clip > 0:
            grads, _ = optax.clip_by_global_norm(self.grad_clip).update(grads, optax.EmptyState())
        rest = without_embedding(params)
        updates, dense_state = self.dense.update(without_embedding(grads), opt_state["dense"], rest)
        rest, dense_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                         (optax.apply_updates(rest, updates), dense_state), (rest, opt_state["dense"]))
        embedding, embedding_state = update(opt_state["embedding"], embedding_matrix(params), rows_U,
                                            embedding_matrix(grads), self.schedule, self.b1, self.b2, self.eps,
                                            self.weight_decay, finite)
        return with_embedding(rest, embedding), {"dense": dense_state, "embedding": embedding_state}
