"""The reductions the losses share: a weighted mean over predicted tokens, a streaming logsumexp, and a streaming
draw (sampling from a softmax whose logits are only ever seen a block at a time)."""
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


SUB_BLOCK = 128  # sample_step's inverse CDF: columns summed at a time before the search descends into one sum


def sample_step(max_N: jax.Array, mass_N: jax.Array, choice_N: jax.Array, logits_NxC: jax.Array, index_C: jax.Array,
                rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One block of a streaming draw from softmax(logits) over columns: (running max, running Σ exp(x − max), the
    column drawn so far) updated with the block `logits_NxC` of columns `index_C`. After every block (each with its
    own `rng`) `choice_N` is a draw from softmax(logits) over all columns; a column of probability 0 (−inf) is
    never drawn once a row has met a positive one. No gradient.

    A weighted reservoir: the draw moves into this block with probability (the block's mass) / (the mass so far),
    and the same uniform, rescaled, picks the column by inverse CDF. One uniform per row and block: drawing a
    Gumbel variate per logit, as Gumbel-max does, costs more than the logits' matmul on CPU."""
    logits_NxC = jax.lax.stop_gradient(logits_NxC)
    new_max_N = jnp.maximum(max_N, logits_NxC.max(-1))
    shift_N = jnp.where(jnp.isfinite(new_max_N), new_max_N, 0.0)
    earlier_N = mass_N * jnp.exp(max_N - shift_N)
    weights_NxC = jnp.exp(logits_NxC - shift_N[..., None])
    total_N = earlier_N + weights_NxC.sum(-1)
    target_N = jax.random.uniform(rng, total_N.shape) * total_N
    column_N = index_C[inverse_cdf(weights_NxC, target_N - earlier_N)]
    moves_N = (target_N >= earlier_N) & (total_N > earlier_N)
    return new_max_N, total_N, jnp.where(moves_N, column_N, choice_N)


def inverse_cdf(weights_NxC: jax.Array, target_N: jax.Array) -> jax.Array:
    """int32 [N]: the first column whose running sum of the non-negative `weights_NxC` exceeds `target_N`, or the
    last column of positive weight where rounding leaves none above it (a row of all zeros gives column 0). Sums
    over SUB_BLOCK columns pick the sub-block, then the running sum inside that one: O(C) work, where one running
    sum over C columns costs O(C log C) or worse (XLA's cumulative sums)."""
    lead, columns = weights_NxC.shape[:-1], weights_NxC.shape[-1]
    weights_NxC, target_N = weights_NxC.reshape(-1, columns), target_N.reshape(-1)
    size = min(SUB_BLOCK, columns)
    num_sub = -(-columns // size)
    weights_NxMxS = jnp.pad(weights_NxC, ((0, 0), (0, num_sub * size - columns))).reshape(-1, num_sub, size)
    sums_NxM = weights_NxMxS.sum(-1)
    sub_N = _first_above(jnp.cumsum(sums_NxM, -1), target_N, sums_NxM > 0)
    inside_NxS = jnp.take_along_axis(weights_NxMxS, sub_N[:, None, None], axis=1)[:, 0]
    before_N = jnp.where(jnp.arange(num_sub) < sub_N[:, None], sums_NxM, 0.0).sum(-1)
    column_N = sub_N * size + _first_above(before_N[:, None] + jnp.cumsum(inside_NxS, -1), target_N, inside_NxS > 0)
    return column_N.reshape(lead)


def _first_above(running_NxC: jax.Array, target_N: jax.Array, positive_NxC: jax.Array) -> jax.Array:
    """The first column with running_NxC > target_N, at most the last positive one (0 when there is none)."""
    passed_N = jnp.sum(running_NxC <= target_N[:, None], -1)
    last_positive_N = jnp.max(jnp.where(positive_NxC, jnp.arange(positive_NxC.shape[-1]), 0), -1)
    return jnp.minimum(passed_N, last_positive_N).astype(jnp.int32)
