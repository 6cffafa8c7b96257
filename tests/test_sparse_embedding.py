"""Sparse updates of a headless model's embedding (optim.embedding_update=sparse): equal to dense AdamW where every
row is in every step, equal to a float64 NumPy reference of the stated semantics where rows are skipped, no
[V,D] work in the compiled step beyond E and its moments, bitwise resumable, refused where the gradient is dense."""
import os
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from headless_jax.experiment import build_experiment
from headless_jax.train import sparse_embedding
from headless_jax.validate import ConfigError, validate_config
from tests.main_runs import STEPS, final_params, run, start, train_losses, wait_until
from tests.train_helpers import SEQ_LEN, VOCAB, run_steps, tiny_config

SPARSE = "--config.optim.embedding_update=sparse"


def every_row_batches(n: int, batch: int, seed: int = 0) -> list[dict]:
    """Batches in which every vocabulary id occurs (each a shuffle of the whole vocabulary, repeated)."""
    rng = np.random.default_rng(seed)
    assert batch * SEQ_LEN % VOCAB == 0
    batches = []
    for _ in range(n):
        tokens = np.concatenate([rng.permutation(VOCAB) for _ in range(batch * SEQ_LEN // VOCAB)])
        tokens = tokens.reshape(batch, SEQ_LEN).astype(np.int32)
        batches.append({"tokens": tokens, "segment_ids": np.ones_like(tokens),
                        "positions": np.tile(np.arange(SEQ_LEN, dtype=np.int32), (batch, 1))})
    return batches


@pytest.mark.parametrize("task, mesh, microbatches", [("clm", {}, 1), ("mlm", {}, 2),
                                                      ("clm", {"data": 2, "fsdp": 2, "tensor": 2}, 1)])
def test_sparse_equals_dense_when_every_row_is_in_every_step(task, mesh, microbatches):
    config = tiny_config(task, "cwt", batch=16)
    config.train.microbatches = microbatches
    config.mesh.update(mesh)
    config.optim.update(weight_decay=0.1, grad_clip=0.05)  # clipping active: the norm covers E's rows too
    batches = every_row_batches(4, 16)
    devices = jax.devices()[:8] if mesh else jax.devices()[:1]
    dense_losses, dense, _ = run_steps(config, batches, devices)
    config.optim.embedding_update = "sparse"
    sparse_losses, sparse, state = run_steps(config, batches, devices)
    np.testing.assert_allclose(sparse_losses, dense_losses, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(sparse), jax.tree.leaves(dense)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-7)
    if mesh:  # E and its moments keep E's layout: rows over 'tensor' (vocab), columns over 'fsdp' (embed)
        embedding_state = state["opt_state"]["embedding"]
        for array in (state["params"]["body"]["embed"]["embedding"], embedding_state.mu_VxD, embedding_state.nu_VxD):
            assert array.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")


def sparse_steps(E0, steps, schedule, b1, b2, eps, wd, start_count=0):
    """E after sparse_embedding.update over `steps` [(ids, grads)], from a state at `start_count` updates."""
    V, D = E0.shape
    U = max(len(ids) for ids, _ in steps)
    state = sparse_embedding.init(jnp.asarray(E0))
    state = state._replace(count=jnp.int32(start_count), updated_at_V=jnp.full(V, start_count, jnp.int32))
    update = jax.jit(sparse_embedding.update, static_argnums=(4,), static_argnames=("b1", "b2", "eps", "weight_decay"))
    E = jnp.asarray(E0)
    for ids, grads in steps:
        rows_U = np.full(U, V, np.int32)  # padded with the row that does not exist, as touched_rows does
        rows_U[:len(ids)] = ids
        grads_UxD = np.zeros((U, D), np.float32)
        grads_UxD[:len(ids)] = grads
        E, state = update(state, E, jnp.asarray(rows_U), jnp.asarray(grads_UxD), schedule, b1=b1, b2=b2, eps=eps,
                          weight_decay=wd)
    return np.asarray(E)


def random_steps(V, D, n, seed=0):
    """n steps of gradients for random subsets of rows (rows 20+ skip every 4th step, so gaps vary); the last step
    reads every row, so that every row's missed updates are caught up by the end."""
    rng = np.random.default_rng(seed)
    steps = []
    for t in range(n - 1):
        ids = np.sort(rng.choice(V if t % 4 else 20, size=rng.integers(3, 12), replace=False))
        steps.append((ids, rng.normal(size=(len(ids), D)).astype(np.float32)))
    steps.append((np.arange(V), rng.normal(size=(V, D)).astype(np.float32)))
    return rng.normal(size=(V, D)).astype(np.float32), steps


def test_the_update_equals_a_float64_reference_of_its_semantics_where_rows_are_skipped():
    """The stated semantics applied step by step in float64: a row not in a step has a zero gradient, its moments
    and weights decay, and the direction m̂/√v̂ its momentum would have moved it in is owed; when it is next read,
    what is owed is applied at that step's learning rate and bias corrections, then that step's AdamW update."""
    V, D, b1, b2, eps, wd = 40, 8, 0.9, 0.98, 1e-6, 0.3
    schedule = optax.linear_schedule(0.05, 0.01, 12)
    E0, steps = random_steps(V, D, 12)
    E, m, v, owed = E0.astype(np.float64), np.zeros((V, D)), np.zeros((V, D)), np.zeros((V, D))
    for t, (ids, grads) in enumerate(steps, start=1):
        lr, read = float(schedule(t - 1)), np.isin(np.arange(V), ids)
        E[read] -= lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * owed[read]
        owed[read] = 0
        g = np.zeros((V, D))
        g[ids] = grads
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
        adam = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        E[read] -= lr * (adam[read] + wd * E[read])
        E[~read] *= 1 - lr * wd
        with np.errstate(invalid="ignore"):
            owed[~read] += np.where(v[~read] > 0, m[~read] / np.sqrt(v[~read]), 0)
    assert sum(len(ids) for ids, _ in steps[:-1]) < (len(steps) - 1) * V / 3  # most rows wait in most steps
    np.testing.assert_allclose(sparse_steps(E0, steps, schedule, b1, b2, eps, wd), E, rtol=2e-5, atol=2e-6)


def test_where_lr_and_bias_corrections_hold_still_the_update_is_dense_adamw_with_skipped_rows():
    """Late in a run (bias corrections ≈ 1), at a constant learning rate, ε ≪ √v̂ and without weight decay, the
    catch-up is exact: sparse equals dense AdamW (float64 NumPy, every row updated every step)."""
    V, D, b1, b2, eps, lr, start = 40, 8, 0.9, 0.98, 1e-12, 0.01, 100_000
    E0, steps = random_steps(V, D, 16, seed=1)
    E, m, v = E0.astype(np.float64), np.zeros((V, D)), np.zeros((V, D))
    for t, (ids, grads) in enumerate(steps, start=start + 1):
        g = np.zeros((V, D))
        g[ids] = grads
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            adam = np.where(v > 0, (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps), 0)
        E -= lr * adam
    np.testing.assert_allclose(sparse_steps(E0, steps, optax.constant_schedule(lr), b1, b2, eps, 0.0, start), E,
                               rtol=1e-5, atol=1e-6)


BIG_VOCAB = 509  # a size no other dimension of the tiny model has


def vocab_sized_work(config) -> list[str]:
    """What the compiled train step computes with E's shape [V,D], other than reading its parameters or writing
    rows into them: the op of every such instruction that is not a parameter, a scatter, or a fusion around a
    scatter (XLA's in-place row update)."""
    experiment = build_experiment(config, jax.devices()[:1])
    with experiment.layout.active():
        batch = experiment.layout.global_batch(every_row_batches(1, 8)[0])
        hlo = experiment.train_step.lower(experiment.abstract_state, batch).compile().as_text()
    work = []
    for line in hlo.splitlines():
        match = re.search(rf"= f32\[{BIG_VOCAB},32\]\{{[^}}]*\}} ([a-z-]+)\(", line)
        if match and match.group(1) not in ("parameter", "scatter") and not (
                match.group(1) == "fusion" and "calls=%wrapped_scatter" in line):
            work.append(match.group(1))
    return work


def test_the_sparse_step_has_no_vocabulary_sized_intermediate():
    config = tiny_config("clm", "cwt", batch=8)
    config.model.vocab_size = BIG_VOCAB
    assert len(vocab_sized_work(config)) > 20  # the control: dense AdamW, clipping and the guard pass over [V,D]
    config.optim.embedding_update = "sparse"
    assert vocab_sized_work(config) == []


def test_a_sparse_run_resumed_mid_run_is_bitwise_the_uninterrupted_one(corpus, tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    run(reference, corpus, SPARSE)
    process = start(interrupted, corpus, SPARSE)
    wait_until(lambda: os.path.exists(interrupted / "metrics.jsonl") and len(train_losses(interrupted)) >= 12, process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=300)
    result = run(interrupted, corpus, SPARSE)
    assert "Resumed from the checkpoint at step" in result.stdout
    assert train_losses(interrupted) == train_losses(reference)
    for a, b in zip(jax.tree.leaves(final_params(interrupted)), jax.tree.leaves(final_params(reference))):
        np.testing.assert_array_equal(a, b)
    assert len(jax.tree.leaves(final_params(reference))) > 10 and STEPS == max(train_losses(reference))


@pytest.mark.parametrize("loss, head, message", [("ce", "untied", "classical"), ("ce", "tied", "tied")])
def test_sparse_updates_are_refused_where_the_embedding_gradient_is_dense(loss, head, message):
    config = tiny_config("clm", loss)
    config.model.head = head
    config.optim.embedding_update = "sparse"
    with pytest.raises(ConfigError, match=f"optim.embedding_update=sparse.*{message}"):
        validate_config(config, num_devices=None)
