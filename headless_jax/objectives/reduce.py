"""The reductions the losses share: a weighted mean over predicted tokens, a streaming logsumexp, and a streaming
Gumbel-max draw (sampling from a softmax whose logits are only ever seen a block at a time)."""
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


def gumbel_max_step(best_N: jax.Array, choice_N: jax.Array, logits_NxC: jax.Array, index_C: jax.Array,
                    rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One block of a Gumbel-max draw over columns: (the best logit + Gumbel noise so far, its column) updated with
    the block `logits_NxC` of columns `index_C`. After every block (each with its own `rng`) `choice_N` is a draw
    from softmax(logits) over all columns; a −inf column is never drawn. A metric-free, gradient-free draw."""
    perturbed_NxC = jax.lax.stop_gradient(logits_NxC) + jax.random.gumbel(rng, logits_NxC.shape)
    block_best_N = perturbed_NxC.max(-1)
    better_N = block_best_N > best_N
    return (jnp.where(better_N, block_best_N, best_N),
            jnp.where(better_N, index_C[jnp.argmax(perturbed_NxC, -1)], choice_N))
