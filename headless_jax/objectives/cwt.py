"""Contrastive Weight Tying: the loss of a headless language model (docs/method.md).

For one negative group of K predicted positions with outputs O [K,D] and targets T = E[targets] [K,D]:

    Z = O·Tᵀ / τ                                         logits [K,K], float32
    row_loss_s = logsumexp_t Z[s,t] − Z[s,s]             softmax CE with the diagonal as the positive

Invalid positions (padding, cross-document targets, unfilled mask slots) are dropped as rows and as
columns. Every occurrence of a token is a column of its own (no de-duplication).

The batch [B,S] is cut into B/group_size groups of consecutive sequences (K = group_size·S), laid out along
the batch axis so that a batch-sharded array keeps each group on one shard. The loss of the step is the
mean of the row losses over all valid rows of all groups, Σ valid·row_loss / Σ valid: it does not depend on
how many devices the batch is spread over, and groups with more valid rows weigh more.
"""
import math

import jax
import jax.numpy as jnp

from headless_jax.objectives.cwt_blockwise import blockwise_row_losses, sample_columns
from headless_jax.objectives.reduce import weighted_mean

BLOCK_MULTIPLE = 128  # automatic blocks are multiples of the TPU lane width


def auto_block_size(num_groups: int, group_len: int, memory_budget_mb: float) -> int:
    """0 (dense) if the [G,K,K] float32 logits fit the budget; else the block size that cuts them into as
    few [G,K,block] pieces as fit it (rounded up to a multiple of 128, so possibly slightly over)."""
    dense_mb = num_groups * group_len**2 * 4 / 2**20
    if dense_mb <= memory_budget_mb:
        return 0
    num_blocks = math.ceil(dense_mb / memory_budget_mb)
    return min(group_len, BLOCK_MULTIPLE * math.ceil(group_len / num_blocks / BLOCK_MULTIPLE))


def dense_row_losses(o_GxKxD: jax.Array, t_GxKxD: jax.Array, valid_GxK: jax.Array,
                     temperature: float) -> jax.Array:
    """Per-row CWT losses [G,K] from the full [G,K,K] logits."""
    logits_GxKxK = jnp.einsum("gsd,gtd->gst", o_GxKxD, t_GxKxD, preferred_element_type=jnp.float32)
    logits_GxKxK = logits_GxKxK / temperature
    # The diagonal is always kept so that no row is all -inf (no NaN, in value or gradient); it changes
    # nothing for valid rows, and invalid rows are weighted 0 by the caller.
    keep_GxKxK = (valid_GxK > 0)[:, None, :] | jnp.eye(o_GxKxD.shape[1], dtype=bool)
    logits_GxKxK = jnp.where(keep_GxKxK, logits_GxKxK, -jnp.inf)
    return jax.nn.logsumexp(logits_GxKxK, axis=-1) - jnp.diagonal(logits_GxKxK, axis1=1, axis2=2)


def negative_groups(group_size: int, *arrays_BxS: jax.Array) -> tuple[jax.Array, ...]:
    """[B,S,…] arrays cut into the negative groups of group_size sequences (0: the whole batch): [G,K,…] with
    K = group_size·S."""
    batch, length = arrays_BxS[0].shape[:2]
    group_size = group_size or batch
    if batch % group_size:
        raise ValueError(f"CWT group size {group_size} does not divide the batch of {batch} sequences; set "
                         f"--config.objective.cwt_group_size to a divisor of {batch} (or 0 for the whole batch)")
    return tuple(a.reshape(batch // group_size, group_size * length, *a.shape[2:]) for a in arrays_BxS)


def cwt_loss(o_BxSxD: jax.Array, t_BxSxD: jax.Array, valid_BxS: jax.Array, group_size: int,
             temperature: float = 1.0, block_size: int = 0, memory_budget_mb: float = math.inf) -> jax.Array:
    """The CWT loss of a batch: mean row loss over the valid rows of all negative groups.

    o_BxSxD: final hidden states at the S predicted positions of each of the B sequences.
    t_BxSxD: the word embeddings of the targets, E[targets] (gradients flow into E through them).
    valid_BxS: weights, 0 = not a prediction (excluded as a row and as a column).
    group_size: sequences per negative group (0 = the whole batch); must divide B.
    block_size: > 0 computes blockwise with this many columns per block, never forming [K,K]; 0 does so
      only if the dense [G,K,K] float32 logits would exceed memory_budget_mb (see auto_block_size).
    """
    o_GxKxD, t_GxKxD, valid_GxK = negative_groups(group_size, o_BxSxD, t_BxSxD, valid_BxS)
    num_groups, group_len = valid_GxK.shape
    block_size = block_size or auto_block_size(num_groups, group_len, memory_budget_mb)
    if block_size > 0:
        row_losses_GxK = blockwise_row_losses(o_GxKxD, t_GxKxD, valid_GxK > 0, temperature, block_size)
    else:
        row_losses_GxK = dense_row_losses(o_GxKxD, t_GxKxD, valid_GxK, temperature)
    return weighted_mean(row_losses_GxK, valid_GxK)


def cwt_sample(o_BxSxD: jax.Array, t_BxSxD: jax.Array, valid_BxS: jax.Array, targets_BxS: jax.Array, group_size: int,
               rng: jax.Array, temperature: float = 1.0, block_size: int = 0,
               memory_budget_mb: float = math.inf) -> jax.Array:
    """[B,S]: for each prediction, a target drawn from its own CWT distribution over its negative group,
    P(t) = softmax_t(o·E[target_t]/τ) over the group's valid columns and its own: the in-batch targets stand in for
    the vocabulary, so no vocabulary-sized array exists (ELECTRA's headless generator). Columns are scored in
    blocks as cwt_loss scores them (block_size, memory_budget_mb); no gradient flows through the draw."""
    o_GxKxD, t_GxKxD, valid_GxK, targets_GxK = negative_groups(group_size, o_BxSxD, t_BxSxD, valid_BxS, targets_BxS)
    num_groups, group_len = valid_GxK.shape
    block_size = block_size or auto_block_size(num_groups, group_len, memory_budget_mb) or group_len
    column_GxK = sample_columns(jax.lax.stop_gradient(o_GxKxD), jax.lax.stop_gradient(t_GxKxD), valid_GxK > 0,
                                temperature, block_size, rng)
    return jnp.take_along_axis(targets_GxK, column_GxK, axis=1).reshape(targets_BxS.shape)
