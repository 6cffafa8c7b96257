"""The CWT loss against an independent float64 NumPy reference: values, gradients, blocks, groups, memory."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from headless_jax.objectives.cwt import cwt_loss


def numpy_group(o, t, valid, tau):
    """One group, float64, explicit loops: (Σ valid row losses, d/do, d/dt of that sum), gradient by hand."""
    o, t = np.asarray(o, np.float64), np.asarray(t, np.float64)
    columns = [j for j in range(len(o)) if valid[j]]
    total, d_o, d_t = 0.0, np.zeros_like(o), np.zeros_like(t)
    for s in columns:
        z = np.array([o[s] @ t[j] for j in columns]) / tau
        logsumexp = z.max() + np.log(np.sum(np.exp(z - z.max())))
        total += logsumexp - o[s] @ t[s] / tau
        probs = np.exp(z - logsumexp)  # softmax over the valid columns, minus the one-hot of the positive
        for p, j in zip(probs, columns):
            d_o[s] += p * t[j] / tau
            d_t[j] += p * o[s] / tau  # as a column (negative or positive) of row s
        d_o[s] -= t[s] / tau
        d_t[s] -= o[s] / tau
    return total, d_o, d_t


def numpy_cwt(o_BxSxD, t_BxSxD, valid_BxS, group_size, tau):
    """Mean over all valid rows of all groups of consecutive sequences, and its gradients."""
    b, s, d = o_BxSxD.shape
    g = group_size or b
    o, t, valid = (np.asarray(x).reshape(b // g, g * s, -1) for x in (o_BxSxD, t_BxSxD, valid_BxS))
    parts = [numpy_group(o[i], t[i], valid[i, :, 0], tau) for i in range(b // g)]
    count = max(np.sum(valid), 1)
    return (sum(p[0] for p in parts) / count, np.stack([p[1] for p in parts]).reshape(b, s, d) / count,
            np.stack([p[2] for p in parts]).reshape(b, s, d) / count)


def random_case(seed, batch=4, length=5, dim=8, vocab=6, scale=8.0):
    """Large logits (|o·t| ~ 200), few token ids (many duplicate targets), some invalid positions."""
    rng = np.random.default_rng(seed)
    o = jnp.asarray(scale * rng.standard_normal((batch, length, dim)), jnp.float32)
    embedding = jnp.asarray(scale * rng.standard_normal((vocab, dim)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, vocab, (batch, length)), jnp.int32)
    valid = jnp.asarray(rng.random((batch, length)) < 0.7)
    return o, embedding, targets, valid


def loss_fn(group_size, tau, block_size=0, memory_budget_mb=np.inf):
    def f(o, embedding, targets, valid):
        return cwt_loss(o, embedding[targets], valid, group_size, tau, block_size, memory_budget_mb)
    return f


def value_and_grads(f, *args):
    return jax.jit(jax.value_and_grad(f, (0, 1)))(*args)


@pytest.mark.parametrize("group_size", [0, 2])
@pytest.mark.parametrize("block_size", [0, 3])  # dense; blockwise with K = 10 or 20 not a multiple of 3
def test_value_and_gradients_match_float64_reference(group_size, block_size):
    tau = 0.7
    o, embedding, targets, valid = random_case(0)
    valid = valid.at[0, 0].set(False).at[1, 2].set(False)
    t = embedding[targets]
    logits = np.einsum("bsd,ctd->bsct", np.asarray(o), np.asarray(t)) / tau
    with np.errstate(over="ignore"):
        assert np.abs(logits).max() > 200 and not np.isfinite(np.exp(logits.astype(np.float32))).all()
    assert len(np.unique(np.asarray(targets))) < targets.size  # duplicate tokens are columns of their own

    loss, (d_o, d_embedding) = value_and_grads(loss_fn(group_size, tau, block_size), o, embedding, targets, valid)
    want, want_d_o, want_d_t = numpy_cwt(o, t, valid, group_size, tau)
    want_d_embedding = np.zeros(embedding.shape)
    np.add.at(want_d_embedding, np.asarray(targets).reshape(-1), want_d_t.reshape(-1, o.shape[-1]))
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    # Logits near 200 carry float32 rounding of ~1e-5 (the blockwise backward recomputes them): so does
    # the softmax, hence an absolute tolerance relative to the gradient's scale.
    for got, want in ((d_o, want_d_o), (d_embedding, want_d_embedding)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * np.abs(want).max())


def test_rows_with_no_valid_column_are_harmless():
    o, embedding, targets, _ = random_case(1)
    valid = jnp.zeros(targets.shape, bool).at[2, 3].set(True)  # one valid row: loss 0, zero gradients
    for block_size in (0, 4):
        for only_one in (valid, valid & False):
            loss, grads = value_and_grads(loss_fn(2, 1.0, block_size), o, embedding, targets, only_one)
            assert loss == 0 and all(np.all(np.asarray(g) == 0) for g in grads)


@pytest.mark.parametrize("group_size", [0, 3])
def test_blockwise_equals_dense_under_jit(group_size):
    o, embedding, targets, valid = random_case(2, batch=6, length=7, scale=1.0)  # K = 42 or 21, block 8
    args = (o, embedding, targets, valid.astype(jnp.float32))
    dense = value_and_grads(loss_fn(group_size, 0.5), *args)
    blockwise = value_and_grads(loss_fn(group_size, 0.5, block_size=8), *args)
    np.testing.assert_allclose(blockwise[0], dense[0], rtol=1e-6)
    for got, want in zip(blockwise[1], dense[1]):  # float32 rounding, relative to the gradient's scale
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def has_kxk(f, args, k):
    hlo = jax.jit(f).lower(*args).compile().as_text()
    return re.search(rf"\b{k},{k}\b", hlo) is not None


def test_blockwise_never_materialises_kxk():
    k = 300  # 3 sequences of 100 in one group; no other dimension is 300
    o, embedding, targets, valid = random_case(3, batch=3, length=100, dim=8, vocab=50, scale=1.0)
    args = (o, embedding, targets, valid)
    assert has_kxk(jax.grad(loss_fn(0, 1.0), (0, 1)), args, k)  # the check does see the dense [K,K] logits
    assert not has_kxk(jax.grad(loss_fn(0, 1.0, block_size=64), (0, 1)), args, k)
    # Automatic choice: the dense [1,300,300] float32 logits (0.34 MB) are over a 0.1 MB budget.
    assert not has_kxk(jax.grad(loss_fn(0, 1.0, memory_budget_mb=0.1), (0, 1)), args, k)
    np.testing.assert_allclose(jax.jit(loss_fn(0, 1.0, memory_budget_mb=0.1))(*args), jax.jit(loss_fn(0, 1.0))(*args),
                               rtol=1e-6)


def test_groups_equal_mean_of_per_group_losses():
    o, embedding, targets, _ = random_case(4, batch=6, length=4, scale=1.0)
    whole, group = jax.jit(loss_fn(0, 1.0)), jax.jit(loss_fn(2, 1.0))
    per_group = lambda valid: [whole(o[i:i + 2], embedding, targets[i:i + 2], valid[i:i + 2]) for i in range(0, 6, 2)]
    equal = jnp.ones(targets.shape, bool).at[:, 0].set(False)  # 6 valid rows in each group
    np.testing.assert_allclose(group(o, embedding, targets, equal), np.mean(per_group(equal)), rtol=1e-6)
    unequal = equal.at[0, 1:].set(False).at[5, 2].set(False)  # 3, 6 and 5 valid rows: weighted by count
    want = np.average(per_group(unequal), weights=[3, 6, 5])
    np.testing.assert_allclose(group(o, embedding, targets, unequal), want, rtol=1e-6)
    assert not np.isclose(want, np.mean(per_group(unequal)))  # the two weightings do differ here


def test_group_size_must_divide_batch():
    o, embedding, targets, valid = random_case(5, batch=6)
    with pytest.raises(ValueError, match="cwt_group_size"):
        loss_fn(4, 1.0)(o, embedding, targets, valid)


def test_embedding_gradient_only_on_rows_of_present_tokens():
    vocab, dim = 12, 4
    rng = np.random.default_rng(6)
    embedding, w = jnp.asarray(rng.standard_normal((vocab, dim))), jnp.asarray(rng.standard_normal((dim, dim)))
    inputs = jnp.array([[1, 2, 3], [2, 4, 1]])
    targets = jnp.array([[5, 5, 6], [7, 8, 2]])
    valid = jnp.array([[True, True, True], [True, False, True]])  # token 8 is only an invalid target

    def loss(embedding):  # a one-layer "model" mixing positions: the input lookup feeds o, the targets t
        x = embedding[inputs]
        o = jnp.tanh((x + x.mean(1, keepdims=True)) @ w)
        return cwt_loss(o, embedding[targets], valid, 0)

    touched = np.flatnonzero(np.any(np.asarray(jax.jit(jax.grad(loss))(embedding)) != 0, axis=1))
    np.testing.assert_array_equal(touched, [1, 2, 3, 4, 5, 6, 7])


def test_groups_stay_on_their_shard():
    """Batch sharded 8 ways, one group per shard: no collective but the final scalar sums."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))  # as headless_jax.train.layout
    o, embedding, targets, valid = random_case(7, batch=16, length=4, scale=1.0)
    t = jnp.take(embedding, targets, axis=0)
    shard = lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    args = tuple(map(shard, (o, t, valid)))

    def collectives(group_size):
        f = jax.jit(jax.value_and_grad(lambda o, t, v: cwt_loss(o, t, v, group_size), (0, 1)))
        hlo = f.lower(*args).compile().as_text()
        return set(re.findall(r"(all-gather|all-to-all|collective-permute|all-reduce)\(", hlo))

    assert collectives(2) <= {"all-reduce"}
    assert collectives(0) - {"all-reduce"}  # a whole-batch group has to move data between shards


def test_bfloat16_activations_keep_their_dtype_and_match_float32():
    o, embedding, targets, valid = random_case(8, batch=4, length=9, scale=1.0)
    o16, embedding16 = o.astype(jnp.bfloat16), embedding.astype(jnp.bfloat16)
    want = value_and_grads(loss_fn(2, 1.0), o16.astype(jnp.float32), embedding16.astype(jnp.float32), targets, valid)
    for block_size in (0, 4):
        loss, grads = value_and_grads(loss_fn(2, 1.0, block_size), o16, embedding16, targets, valid)
        assert loss.dtype == jnp.float32 and all(g.dtype == jnp.bfloat16 for g in grads)
        np.testing.assert_allclose(loss, want[0], rtol=1e-5)  # logits accumulate in float32
        for got, expected in zip(grads, want[1]):
            np.testing.assert_allclose(got.astype(jnp.float32), expected, rtol=2e-2, atol=2e-3)
