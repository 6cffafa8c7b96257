"""The reductions the losses share: a weighted mean over predicted tokens, and a streaming logsumexp."""
import jax
import jax.numpy as jnp


def weighted_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ w·x / max(Σ w, 1) in float32: a batch with no valid token gives 0, never NaN."""
    weights = weights.astype(jnp.float32)
    return jnp.sum(weights * x.astype(jnp.float32)) / jnp.maximum(jnp.sum(weights), 1.0)


def logsumexp_step(max_N: jax.Array, sum_N: jax.Array, logits_NxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One block of a streaming logsumexp over columns: (running max, running Σ exp(x − max)) updated with the
    block `logits_NxC`; logsumexp = max + log(sum) at the end. The max is a stabiliser, not a function of the
    input (no gradient). A row that has met only −inf keeps max −inf and sum 0: it is shifted by 0, never NaN."""
    new_max_N = jax.lax.stop_gradient(jnp.maximum(max_N, logits_NxC.max(-1)))
    shift_N = jnp.where(jnp.isfinite(new_max_N), new_max_N, 0.0)
    sum_N = sum_N * jnp.exp(max_N - shift_N) + jnp.exp(logits_NxC - shift_N[..., None]).sum(-1)
    return new_max_N, sum_N
