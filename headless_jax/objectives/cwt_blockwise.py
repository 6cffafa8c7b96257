"""Blockwise CWT row losses for large groups: never forms the [K,K] logits, memory O(K·block).

The forward pass scans over column blocks with an online max/sum logsumexp (flash-attention style). The
custom VJP saves only the per-row logsumexp and recomputes each block's softmax in the backward pass:

    Z = O·Tᵀ/τ,  P = softmax_rows(Z),  w = ∂L/∂row_loss / τ
    ∂L/∂O = (w·P)·T − w·T        (all columns, minus the positive)
    ∂L/∂T = (w·P)ᵀ·O − w·O       (as a negative for every row, minus as the positive of its own row)
"""
import functools

import jax
import jax.numpy as jnp

from headless_jax.objectives.reduce import logsumexp_step, sample_step


def _column_blocks(t_GxKxD: jax.Array, valid_GxK: jax.Array, block: int):
    """Columns cut into N blocks of C = block (the tail padded as invalid): t [N,G,C,D], valid [N,G,C], index [N,C]."""
    groups, length, dim = t_GxKxD.shape
    num_blocks = -(-length // block)
    pad = num_blocks * block - length
    t_GxNCxD = jnp.pad(t_GxKxD, ((0, 0), (0, pad), (0, 0)))
    valid_GxNC = jnp.pad(valid_GxK, ((0, 0), (0, pad)))
    t_NxGxCxD = t_GxNCxD.reshape(groups, num_blocks, block, dim).transpose(1, 0, 2, 3)
    valid_NxGxC = valid_GxNC.reshape(groups, num_blocks, block).transpose(1, 0, 2)
    index_NxC = jnp.arange(num_blocks * block).reshape(num_blocks, block)
    return t_NxGxCxD, valid_NxGxC, index_NxC


def _block_logits(o_GxKxD, t_GxCxD, valid_GxC, index_C, temperature):
    """Logits of all rows against one column block, invalid columns at -inf (except each row's diagonal)."""
    logits_GxKxC = jnp.einsum("gsd,gcd->gsc", o_GxKxD, t_GxCxD, preferred_element_type=jnp.float32) / temperature
    # The diagonal is always kept, as in the dense form: no row is empty, so nothing is NaN.
    return jnp.where(valid_GxC[:, None, :] | _diagonal(o_GxKxD, index_C), logits_GxKxC, -jnp.inf)


def _diagonal(o_GxKxD, index_C):
    """[K,C]: whether column c of the block is row s's own target."""
    return index_C[None, :] == jnp.arange(o_GxKxD.shape[1])[:, None]


def _forward(o_GxKxD, t_GxKxD, valid_GxK, temperature, block):
    def accumulate(carry, column_block):
        max_GxK, sum_GxK, positive_GxK = carry
        logits_GxKxC = _block_logits(o_GxKxD, *column_block, temperature)
        # Until a row meets its first kept column its max is -inf (logsumexp_step shifts it by 0 then).
        new_max_GxK, sum_GxK = logsumexp_step(max_GxK, sum_GxK, logits_GxKxC)
        # The positive is read off the same block logits as the normaliser, so that a dominant positive
        # cancels exactly (softmax probability 1, zero gradient) as in the dense form.
        positive_GxK += jnp.where(_diagonal(o_GxKxD, column_block[2]), logits_GxKxC, 0.0).sum(-1)
        return (new_max_GxK, sum_GxK, positive_GxK), None

    zeros_GxK = jnp.zeros(valid_GxK.shape, jnp.float32)
    init = (jnp.full_like(zeros_GxK, -jnp.inf), zeros_GxK, zeros_GxK)
    (max_GxK, sum_GxK, positive_GxK), _ = jax.lax.scan(accumulate, init, _column_blocks(t_GxKxD, valid_GxK, block))
    logsumexp_GxK = max_GxK + jnp.log(sum_GxK)  # every row keeps its diagonal, so max is finite and sum ≥ 1
    return logsumexp_GxK - positive_GxK, logsumexp_GxK


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def blockwise_row_losses(o_GxKxD: jax.Array, t_GxKxD: jax.Array, valid_GxK: jax.Array, temperature: float,
                         block: int) -> jax.Array:
    """Per-row CWT losses [G,K], equal to `cwt.dense_row_losses`; valid_GxK is boolean (the columns kept)."""
    return _forward(o_GxKxD, t_GxKxD, valid_GxK, temperature, block)[0]


def _fwd(o_GxKxD, t_GxKxD, valid_GxK, temperature, block):
    row_losses_GxK, logsumexp_GxK = _forward(o_GxKxD, t_GxKxD, valid_GxK, temperature, block)
    return row_losses_GxK, (o_GxKxD, t_GxKxD, valid_GxK, logsumexp_GxK)


def _bwd(temperature, block, residuals, d_row_losses_GxK):
    o_GxKxD, t_GxKxD, valid_GxK, logsumexp_GxK = residuals
    groups, length, dim = t_GxKxD.shape
    w_GxK = d_row_losses_GxK.astype(jnp.float32) / temperature

    def accumulate(d_o_GxKxD, column_block):
        t_GxCxD = column_block[0]
        logits_GxKxC = _block_logits(o_GxKxD, *column_block, temperature)
        weighted_probs_GxKxC = w_GxK[..., None] * jnp.exp(logits_GxKxC - logsumexp_GxK[..., None])
        # Matmul inputs in the activations' dtype (bfloat16 runs at full speed), accumulation in float32.
        weighted_probs_GxKxC = weighted_probs_GxKxC.astype(o_GxKxD.dtype)
        d_o_GxKxD += jnp.einsum("gsc,gcd->gsd", weighted_probs_GxKxC, t_GxCxD, preferred_element_type=jnp.float32)
        d_t_GxCxD = jnp.einsum("gsc,gsd->gcd", weighted_probs_GxKxC, o_GxKxD, preferred_element_type=jnp.float32)
        return d_o_GxKxD, d_t_GxCxD

    init = jnp.zeros(o_GxKxD.shape, jnp.float32)
    d_o_GxKxD, d_t_NxGxCxD = jax.lax.scan(accumulate, init, _column_blocks(t_GxKxD, valid_GxK, block))
    d_t_GxKxD = d_t_NxGxCxD.transpose(1, 0, 2, 3).reshape(groups, -1, dim)[:, :length]
    # The positive's own term: −Z[s,s] pulls o_s towards t_s and t_s towards o_s.
    d_o_GxKxD -= w_GxK[..., None] * t_GxKxD
    d_t_GxKxD -= w_GxK[..., None] * o_GxKxD
    return d_o_GxKxD.astype(o_GxKxD.dtype), d_t_GxKxD.astype(t_GxKxD.dtype), None


blockwise_row_losses.defvjp(_fwd, _bwd)


def sample_columns(o_GxKxD: jax.Array, t_GxKxD: jax.Array, valid_GxK: jax.Array, temperature: float, block: int,
                   rng: jax.Array) -> jax.Array:
    """int32 [G,K]: for each row a column of its group drawn from the row's CWT distribution softmax(Z[s,:]) over the
    kept columns (the valid ones and its own), streamed over column blocks (reduce.sample_step): [G,K,block] logits
    at most."""
    def draw(carry, column_block):
        index_C = column_block[2]
        logits_GxKxC = _block_logits(o_GxKxD, *column_block, temperature)
        return sample_step(*carry, logits_GxKxC, index_C, jax.random.fold_in(rng, index_C[0])), None

    zeros_GxK = jnp.zeros(valid_GxK.shape, jnp.float32)
    init = (jnp.full_like(zeros_GxK, -jnp.inf), zeros_GxK, jnp.zeros(valid_GxK.shape, jnp.int32))
    (_, _, column_GxK), _ = jax.lax.scan(draw, init, _column_blocks(t_GxKxD, valid_GxK, block))
    return column_GxK
