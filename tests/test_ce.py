"""Cross-entropy against a float64 NumPy reference; the vocabulary-chunked form against the dense one."""
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from headless_jax.objectives.ce import cross_entropy, logits_stats, vocab_stats
from headless_jax.objectives.scoring import never_target_bias, offset_bias


def numpy_cross_entropy(logits, labels, weights, z_loss):
    """float64 loss and its gradient by hand: w/Σw · (softmax·(1 + 2·z_loss·lse) − one_hot)."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(1, keepdims=True)
    logsumexp = (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))[:, 0]
    rows = np.arange(len(labels))
    scale = np.asarray(weights, np.float64) / max(np.sum(weights), 1)
    loss = np.sum(scale * (logsumexp - logits[rows, labels] + z_loss * logsumexp**2))
    softmax = np.exp(logits - logsumexp[:, None])
    d_logits = softmax * (1 + 2 * z_loss * logsumexp[:, None])
    d_logits[rows, labels] -= 1
    return loss, scale[:, None] * d_logits


def case(seed, rows=12, vocab=37, dim=6, scale=1.0):
    rng = np.random.default_rng(seed)
    features = jnp.asarray(scale * rng.standard_normal((rows, dim)), jnp.float32)
    weight = jnp.asarray(scale * rng.standard_normal((vocab, dim)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(vocab), jnp.float32)
    labels = jnp.asarray(rng.integers(0, vocab, rows), jnp.int32)
    weights = jnp.asarray(rng.random(rows) < 0.75, jnp.float32)
    return features, weight, bias, labels, weights


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_dense_value_and_gradient_match_float64_reference(z_loss):
    _, _, _, labels, weights = case(0)
    logits = jnp.asarray(60 * np.random.default_rng(1).standard_normal((12, 37)), jnp.float32)  # exp overflows
    f = jax.jit(lambda logits: cross_entropy(logits_stats(logits, labels), weights, z_loss))
    loss, d_logits = jax.value_and_grad(f)(logits)
    want, want_d_logits = numpy_cross_entropy(logits, np.asarray(labels), np.asarray(weights), z_loss)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(d_logits, want_d_logits, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("with_bias", [True, False])
def test_chunked_equals_dense(with_bias):
    features, weight, bias, labels, weights = case(2, scale=2.0)
    bias = bias if with_bias else None

    def loss_and_argmax(chunk):
        def f(features, weight, bias):
            stats = vocab_stats(features, weight, bias, labels, chunk)
            return cross_entropy(stats, weights, 1e-2), stats.argmax_N
        return jax.jit(jax.value_and_grad(f, (0, 1, 2), has_aux=True))(features, weight, bias)

    (dense, dense_argmax), dense_grads = loss_and_argmax(0)
    (chunked, chunked_argmax), chunked_grads = loss_and_argmax(8)  # 37 = 4·8 + 5: a padded last chunk
    np.testing.assert_allclose(chunked, dense, rtol=1e-6)
    np.testing.assert_array_equal(chunked_argmax, dense_argmax)
    for got, want in zip(jax.tree.leaves(chunked_grads), jax.tree.leaves(dense_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # summation order: float32 rounding


def test_chunked_never_materialises_all_logits():
    features, weight, bias, labels, weights = case(3, rows=24, vocab=300)

    def has_rows_by_vocab(chunk):
        grad = jax.grad(lambda *a: cross_entropy(vocab_stats(*a, labels, chunk), weights), (0, 1, 2))
        return re.search(r"\b24,300\b", jax.jit(grad).lower(features, weight, bias).compile().as_text()) is not None

    assert has_rows_by_vocab(0)  # the check sees the dense [N,V] logits
    assert not has_rows_by_vocab(64)


@pytest.mark.parametrize("chunk", [0, 8])
def test_never_target_ids_are_left_out_of_the_softmax(chunk):
    """objective.ce_exclude_special on a masked task: the loss is the float64 softmax over the other ids alone, and
    the left-out ids' decoder rows get no gradient (rows of padding may even have them as targets: weight 0)."""
    features, weight, bias, labels, weights = case(3)
    special = (0, 1, 2, 3, 4, 5, 6)
    labels = jnp.where(jnp.isin(labels, jnp.asarray(special)) & (weights > 0), labels + 7, labels)
    config = ml_collections.ConfigDict({"objective": {"ce_exclude_special": True}, "model": {"vocab_size": 37}})
    offset = never_target_bias(config, special, "mlm")
    assert never_target_bias(config, special, "clm") is None  # a next-token task predicts eos
    config.objective.ce_exclude_special = False
    assert never_target_bias(config, special, "mlm") is None

    def loss(weight, bias):
        return cross_entropy(vocab_stats(features, weight, offset_bias(bias, offset), labels, chunk), weights)
    value, (d_weight, d_bias) = jax.value_and_grad(loss, argnums=(0, 1))(weight, bias)
    kept = np.setdiff1d(np.arange(37), special)
    logits = np.asarray(features, np.float64) @ np.asarray(weight, np.float64).T + np.asarray(bias, np.float64)
    rows = np.nonzero(np.asarray(weights))[0]
    kept_logits = logits[rows][:, kept]
    top = kept_logits.max(1, keepdims=True)
    logsumexp = top[:, 0] + np.log(np.exp(kept_logits - top).sum(1))
    reference = np.mean(logsumexp - logits[rows, np.asarray(labels)[rows]])
    assert float(value) == pytest.approx(reference, rel=1e-5)
    assert not np.any(np.asarray(d_weight)[list(special)]) and not np.any(np.asarray(d_bias)[list(special)])
    assert np.all(np.isfinite(np.asarray(d_weight))) and np.any(np.asarray(d_weight)[kept])
