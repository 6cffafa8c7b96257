"""The sharded train step: same numbers on any mesh; accumulation equals a big batch; non-finite guard."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from headless_jax.experiment import build_experiment
from headless_jax.model import embedding_matrix

from tests.train_helpers import random_batches, run_steps, tiny_config

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]


def with_mesh(config, sizes):
    config.mesh.update(data=sizes[0], fsdp=sizes[1], tensor=sizes[2])
    return config


@pytest.mark.parametrize("task,loss", [("clm", "cwt"), ("mlm", "cwt+ce")])
def test_losses_and_params_are_the_same_on_every_mesh(task, loss):
    # SGD: Adam's first steps are sign-like, turning float32 reduction-order noise in near-zero gradients
    # into full-size updates; SGD keeps differences proportional, so equal numbers mean equal gradients.
    sgd = optax.sgd(0.5)
    batches = random_batches(3, 16)
    reference_losses, reference_params, _ = run_steps(with_mesh(tiny_config(task, loss), (1, 1, 1)), batches,
                                                      jax.devices()[:1], optimizer=sgd)
    for sizes in MESHES:
        losses, params, state = run_steps(with_mesh(tiny_config(task, loss), sizes), batches, optimizer=sgd)
        np.testing.assert_allclose(losses, reference_losses, rtol=2e-5, err_msg=f"mesh {sizes}")
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, reference_params)


def test_parameters_are_sharded_as_the_rules_say():
    *_, state = run_steps(with_mesh(tiny_config("mlm", "ce"), (2, 2, 2)), random_batches(1, 16))
    params = state["params"]["body"]
    embedding = embedding_matrix(state["params"])  # ('vocab', 'embed') -> ('tensor', 'fsdp')
    assert embedding.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert embedding.addressable_shards[0].data.shape == (64 // 2, 32 // 2)
    query = params["layer_0"]["attention"]["query"]["kernel"]  # ('embed', 'heads', 'kv')
    assert query.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    mu = state["opt_state"][1][0].mu["body"]["embed"]["embedding"]  # Adam moments shard like their parameter
    assert mu.sharding.spec == embedding.sharding.spec


def test_gradient_accumulation_equals_one_big_batch():
    # group_size 1 makes each sequence its own negative group, so the loss does not depend on which
    # sequences share a microbatch; plain SGD makes "same parameters" mean "same gradients".
    sgd = optax.sgd(0.5)
    batches, devices = random_batches(2, 16), jax.devices()[:4]  # 4 microbatches of 4 rows: one per shard
    config = tiny_config("clm", "cwt")
    config.objective.cwt_group_size = 1
    losses, params, _ = run_steps(config, batches, devices, optimizer=sgd)
    config.train.microbatches = 4
    accumulated_losses, accumulated_params, _ = run_steps(config, batches, devices, optimizer=sgd)
    np.testing.assert_allclose(accumulated_losses, losses, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), accumulated_params, params)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), params, run_steps(config, [], devices, optimizer=sgd)[1]))
    assert max(moved) > 1e-3  # the steps did change the parameters


@pytest.mark.parametrize("embedding_update", ["dense", "sparse"])
def test_a_non_finite_update_is_not_applied(embedding_update):
    config = tiny_config("clm", "cwt")
    config.optim.embedding_update = embedding_update
    good = build_experiment(config)

    def poisoned_objective(*args, **kwargs):  # a NaN loss, so NaN gradients: the guard reads the loss and their norm
        loss, metrics = good.objective(*args, **kwargs)
        return loss * jnp.nan, dict(metrics, loss=loss * jnp.nan)

    poisoned = dataclasses.replace(good, objective=poisoned_objective)
    batch = random_batches(1, 16)[0]
    with good.layout.active():
        state = good.init_state()
        state, metrics = good.train_step(state, good.layout.global_batch(batch))
        assert float(metrics["finite"]) == 1
        before = jax.device_get({"params": state["params"], "opt_state": state["opt_state"]})
        state, metrics = poisoned.train_step(state, good.layout.global_batch(batch))
    assert float(metrics["finite"]) == 0 and int(state["step"]) == 2
    jax.tree.map(np.testing.assert_array_equal, jax.device_get({"params": state["params"],
                                                                "opt_state": state["opt_state"]}), before)
