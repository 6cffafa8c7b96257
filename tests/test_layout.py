"""The layout (mesh + rules): input batches follow the config's `batch` rule, and each process's rows of a
batch put side by side are the batch."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from headless_jax.config import base_config
from headless_jax.data import process_rows
from headless_jax.train.layout import Layout, MeshError
from headless_jax.validate import ConfigError, validate_config


def mesh_config(batch_rule):
    mesh = base_config().mesh
    mesh.update(data=4, fsdp=2, tensor=1)
    mesh.axis_rules = tuple((name, batch_rule if name == "batch" else axes) for name, axes in mesh.axis_rules)
    return mesh


@pytest.mark.parametrize("rule,shards", [(("data", "fsdp"), 8), ("data", 4), (None, 1)])
def test_input_batches_are_sharded_as_the_batch_rule_says(rule, shards):
    layout = Layout.from_config(mesh_config(rule))
    assert layout.batch_shards == shards
    batch = layout.global_batch({"tokens": np.arange(16 * 3, dtype=np.int32).reshape(16, 3)})
    assert batch["tokens"].sharding.spec == PartitionSpec(layout.batch_sharding.spec[0])
    assert batch["tokens"].addressable_shards[0].data.shape == (16 // shards, 3)
    np.testing.assert_array_equal(np.asarray(batch["tokens"]), np.arange(48).reshape(16, 3))


def test_validation_counts_the_batch_shards_of_the_rule():
    config = base_config()
    config.mesh = mesh_config("data")
    config.train.global_batch_size = 12  # 3 rows per data shard; not a multiple of data × fsdp = 8
    validate_config(config, num_devices=8)
    config.mesh = mesh_config(("data", "fsdp"))
    with pytest.raises(ConfigError, match=r"not divisible by batch shards \(the mesh axes of the 'batch' rule: 8\)"):
        validate_config(config, num_devices=8)


def test_process_rows_side_by_side_are_the_batch():
    batch = {"tokens": np.arange(24).reshape(12, 2), "labels": np.arange(12)}
    shares = [process_rows(batch, p, 3) for p in range(3)]
    for name, values in batch.items():
        np.testing.assert_array_equal(np.concatenate([share[name] for share in shares]), values)
    assert shares[1]["labels"].tolist() == [4, 5, 6, 7]
    assert len(jax.devices()) == 8  # the fake devices the layouts above were built on


def test_an_axis_the_mesh_cannot_split_is_refused_by_name():
    mesh = base_config().mesh
    mesh.update(data=2, fsdp=2, tensor=2)
    layout = Layout.from_config(mesh)
    def box(shape):
        return nn.Partitioned(jax.ShapeDtypeStruct(shape, jnp.float32), names=("embed", "heads"))
    shardings = layout.shardings({"params": {"key": box((6, 4))}, "step": jax.ShapeDtypeStruct((), jnp.int32)})
    assert shardings["params"]["key"].spec == PartitionSpec("fsdp", "tensor")
    with pytest.raises(MeshError, match=r"\['params'\]\['key'\] \(6, 3\): its axis 'heads' \(size 3\) is split "
                                         r"over mesh.tensor=2, which does not divide it; make the model's 'heads' size"):
        layout.shardings({"params": {"key": box((6, 3))}, "opt_state": {"mu": {"key": box((6, 3))}}})
