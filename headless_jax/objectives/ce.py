"""Softmax cross-entropy over the vocabulary (the classical baselines), dense or over vocabulary chunks.

Both forms reduce logits to per-row statistics (logsumexp, the label's logit, the argmax), from which the
loss and the accuracy follow. The chunked form streams over vocabulary chunks with an online logsumexp, so
the [N,V] logits never exist at once (forward or backward: the chunk body is rematerialised). ELECTRA's classical
generator samples from the same logits chunk by chunk (`vocab_sample`).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from headless_jax.model.heads import head_logits
from headless_jax.objectives.reduce import logsumexp_step, sample_step, weighted_mean


class VocabStats(NamedTuple):
    logsumexp_N: jax.Array  # float32
    label_logit_N: jax.Array  # float32
    argmax_N: jax.Array  # the top-scoring token (ties: the lowest id)


def logits_stats(logits_NxV: jax.Array, labels_N: jax.Array) -> VocabStats:
    logits_NxV = logits_NxV.astype(jnp.float32)
    label_logit_N = jnp.take_along_axis(logits_NxV, labels_N[:, None], axis=1)[:, 0]
    return VocabStats(jax.nn.logsumexp(logits_NxV, axis=-1), label_logit_N, jnp.argmax(logits_NxV, axis=-1))


def _vocab_chunks(weight_VxD: jax.Array, bias_V: jax.Array | None, chunk: int):
    """The head cut into M chunks of C = chunk rows (the tail padded): weight [M,C,D], bias [M,C] | None, ids [M,C]."""
    vocab, dim = weight_VxD.shape
    num_chunks = -(-vocab // chunk)
    pad = num_chunks * chunk - vocab  # < chunk: every chunk holds at least one real token
    weight_MxCxD = jnp.pad(weight_VxD, ((0, pad), (0, 0))).reshape(num_chunks, chunk, dim)
    bias_MxC = None if bias_V is None else jnp.pad(bias_V, (0, pad)).reshape(num_chunks, chunk)
    return weight_MxCxD, bias_MxC, jnp.arange(num_chunks * chunk).reshape(num_chunks, chunk)


def _chunk_logits(features_NxD, vocab_chunk, vocab: int) -> jax.Array:
    weight_CxD, bias_C, index_C = vocab_chunk
    return jnp.where(index_C < vocab, head_logits(features_NxD, weight_CxD, bias_C), -jnp.inf)


def chunked_stats(features_NxD: jax.Array, weight_VxD: jax.Array, bias_V: jax.Array | None, labels_N: jax.Array,
                  chunk: int) -> VocabStats:
    """`logits_stats(head_logits(features, weight, bias), labels)` with at most [N,chunk] logits alive."""
    vocab = weight_VxD.shape[0]

    def accumulate(carry, vocab_chunk):
        max_N, sum_N, label_logit_N, argmax_N = carry
        index_C = vocab_chunk[2]
        logits_NxC = _chunk_logits(features_NxD, vocab_chunk, vocab)
        new_max_N, sum_N = logsumexp_step(max_N, sum_N, logits_NxC)
        label_logit_N += jnp.where(index_C == labels_N[:, None], logits_NxC, 0.0).sum(-1)
        argmax_N = jnp.where(logits_NxC.max(-1) > max_N, index_C[jnp.argmax(logits_NxC, -1)], argmax_N)
        return (new_max_N, sum_N, label_logit_N, argmax_N), None

    num_rows = features_NxD.shape[0]
    init = (jnp.full((num_rows,), -jnp.inf), jnp.zeros((num_rows,)), jnp.zeros((num_rows,)),
            jnp.zeros((num_rows,), jnp.int32))
    # Rematerialised chunk body: the backward pass keeps only the carries, not N×V softmax probabilities.
    body = jax.checkpoint(accumulate, prevent_cse=False)
    (max_N, sum_N, label_logit_N, argmax_N), _ = jax.lax.scan(body, init, _vocab_chunks(weight_VxD, bias_V, chunk))
    return VocabStats(max_N + jnp.log(sum_N), label_logit_N, argmax_N)


def vocab_sample(features_NxD: jax.Array, weight_VxD: jax.Array, bias_V: jax.Array | None, rng: jax.Array,
                 chunk: int = 0) -> jax.Array:
    """int32 [N]: a token drawn for each row from softmax(features·weightᵀ + bias), streamed over vocabulary
    chunks of `chunk` rows (0: all at once; reduce.sample_step), so never more than [N,chunk] logits; no gradient."""
    vocab = weight_VxD.shape[0]

    def draw(carry, vocab_chunk):
        index_C = vocab_chunk[2]
        logits_NxC = _chunk_logits(features_NxD, vocab_chunk, vocab)
        return sample_step(*carry, logits_NxC, index_C, jax.random.fold_in(rng, index_C[0])), None

    num_rows = features_NxD.shape[0]
    init = (jnp.full((num_rows,), -jnp.inf), jnp.zeros((num_rows,)), jnp.zeros((num_rows,), jnp.int32))
    (_, _, token_N), _ = jax.lax.scan(draw, init, _vocab_chunks(weight_VxD, bias_V, chunk or vocab))
    return token_N


def vocab_stats(features_NxD: jax.Array, weight_VxD: jax.Array, bias_V: jax.Array | None, labels_N: jax.Array,
                chunk: int = 0) -> VocabStats:
    """Statistics of the logits features·weightᵀ + bias: dense when chunk = 0, else over vocabulary chunks."""
    if chunk > 0:
        return chunked_stats(features_NxD, weight_VxD, bias_V, labels_N, chunk)
    return logits_stats(head_logits(features_NxD, weight_VxD, bias_V), labels_N)


def cross_entropy(stats: VocabStats, weights_N: jax.Array, z_loss: float = 0.0) -> jax.Array:
    """Weighted mean of logsumexp − label logit (+ z_loss·logsumexp², which keeps the normaliser near 0)."""
    row_losses_N = stats.logsumexp_N - stats.label_logit_N + z_loss * jnp.square(stats.logsumexp_N)
    return weighted_mean(row_losses_N, weights_N)
