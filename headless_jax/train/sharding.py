"""The device mesh and the mapping of logical axis names onto it.

Mesh axes are ('data', 'fsdp', 'tensor'). Parameters and activations name logical axes; the config's rules
map them to mesh axes, so switching data ↔ FSDP ↔ tensor parallelism is a config change.
"""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch is sharded over both: FSDP is data parallel for activations


class MeshError(ValueError):
    pass


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
    """Resolves -1 (fill) in the configured ('data', 'fsdp', 'tensor') sizes for `num_devices`."""
    sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    fills = [i for i, s in enumerate(sizes) if s == -1]
    if len(fills) > 1:
        raise MeshError(f"mesh sizes {sizes}: at most one axis may be -1 (fill); set the others explicitly")
    known = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
        raise MeshError(f"mesh (data, fsdp, tensor) = {tuple(sizes)} does not divide {num_devices} devices; "
                        f"set --config.mesh.data/fsdp/tensor so that their product is {num_devices}")
    if fills:
        sizes[fills[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise MeshError(f"mesh (data, fsdp, tensor) = {tuple(sizes)} uses {math.prod(sizes)} devices but "
                        f"{num_devices} are present; make the product {num_devices} or use -1 for one axis")
    return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
    """A mesh over all devices of all processes; with `dcn_data` > 1 the data axis spans TPU slices."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_cfg, len(devices))
    if mesh_cfg.dcn_data > 1:
        if shape[0] % mesh_cfg.dcn_data:
            raise MeshError(f"mesh.data={shape[0]} is not a multiple of mesh.dcn_data={mesh_cfg.dcn_data} slices")
        ici_shape = (shape[0] // mesh_cfg.dcn_data, shape[1], shape[2])
        device_array = mesh_utils.create_hybrid_device_mesh(ici_shape, (mesh_cfg.dcn_data, 1, 1), devices)
    else:
        device_array = np.asarray(devices).reshape(shape)
    return jax.sharding.Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def axis_rules(mesh_cfg) -> tuple:
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in mesh_cfg.axis_rules)


def logical_shardings(boxed_tree, mesh: jax.sharding.Mesh, rules) -> object:
    """NamedShardings for a tree of (abstract) values boxed with logical axis names (unboxed leaves: replicated)."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), mesh, rules)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_shards(mesh: jax.sharding.Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def global_batch(local_batch: dict, mesh: jax.sharding.Mesh) -> dict:
    """Assembles this process's rows of every array into global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
