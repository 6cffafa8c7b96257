"""Where arrays live: the device mesh and the logical-axis rules, as one object.

Mesh axes are ('data', 'fsdp', 'tensor'). Parameters and activations name logical axes; the config's rules
map them to mesh axes, so switching data ↔ FSDP ↔ tensor parallelism is a config change. Input batches
follow the rule for the logical axis `batch` too.
"""
import contextlib
import dataclasses
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from headless_jax.data import process_rows

MESH_AXES = ("data", "fsdp", "tensor")


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


def axis_rules(mesh_cfg) -> tuple:
    """The config's rules as Flax wants them: (logical name, mesh axis | tuple of mesh axes | None) pairs."""
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in mesh_cfg.axis_rules)


def batch_axes(rules) -> tuple[str, ...]:
    """The mesh axes the logical `batch` axis maps to (none: the batch is replicated)."""
    axes = dict(rules).get("batch")
    return (axes,) if isinstance(axes, str) else tuple(axes or ())


@dataclasses.dataclass(frozen=True)
class Layout:
    mesh: jax.sharding.Mesh
    rules: tuple

    @classmethod
    def from_config(cls, mesh_cfg, devices=None) -> "Layout":
        """A mesh over `devices` (default: all devices of all processes); with `dcn_data` > 1 the data axis
        spans TPU slices."""
        devices = jax.devices() if devices is None else devices
        shape = mesh_shape(mesh_cfg, len(devices))
        if mesh_cfg.dcn_data > 1:
            if shape[0] % mesh_cfg.dcn_data:
                raise MeshError(f"mesh.data={shape[0]} is not a multiple of mesh.dcn_data={mesh_cfg.dcn_data} slices")
            ici_shape = (shape[0] // mesh_cfg.dcn_data, shape[1], shape[2])
            device_array = mesh_utils.create_hybrid_device_mesh(ici_shape, (mesh_cfg.dcn_data, 1, 1), devices)
        else:
            device_array = np.asarray(devices).reshape(shape)
        return cls(jax.sharding.Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * 3), axis_rules(mesh_cfg))

    @contextlib.contextmanager
    def active(self):
        """The mesh and rules in force while model code is traced (its logical constraints read them)."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def shardings(self, boxed_tree) -> object:
        """NamedShardings for a tree of (abstract) values boxed with logical axis names (unboxed leaves: replicated).
        An axis the rules split into more shards than its size divides is refused here, naming the array."""
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), self.mesh, self.rules)
        is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
        refusals = jax.tree_util.tree_map_with_path(
            lambda path, box, sharding: self._indivisible(jax.tree_util.keystr(path), box, sharding.spec)
            if is_box(box) else None, boxed_tree, shardings, is_leaf=is_box)
        if found := sorted(jax.tree.leaves(refusals), key=len):  # the shortest names a parameter, not a moment
            raise MeshError(found[0])
        return shardings

    def _indivisible(self, name: str, box: nn.meta.AxisMetadata, spec: PartitionSpec) -> str | None:
        for size, axis, mesh_axes in zip(box.value.shape, box.names, spec):
            mesh_axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
            shards = math.prod(self.mesh.shape[a] for a in mesh_axes)
            if size % shards:
                split = " × ".join(f"mesh.{a}={self.mesh.shape[a]}" for a in mesh_axes)
                return (f"{name} {tuple(box.value.shape)}: its axis {axis!r} (size {size}) is split over {split}, "
                        f"which does not divide it; make the model's {axis!r} size a multiple of {shards} (e.g. more "
                        f"heads, a wider ELECTRA generator), shrink those mesh axes, or map {axis!r} to fewer mesh "
                        "axes in mesh.axis_rules")
        return None

    @property
    def batch_sharding(self) -> NamedSharding:
        """Arrays whose first axis is the batch: that axis split as the `batch` rule says, the others whole."""
        return NamedSharding(self.mesh, PartitionSpec(batch_axes(self.rules) or None))

    @property
    def batch_shards(self) -> int:
        return math.prod(self.mesh.shape[axis] for axis in batch_axes(self.rules))

    def global_batch(self, local_batch: dict) -> dict:
        """This process's rows of every array, assembled into global arrays sharded over the batch axes."""
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v) for k, v in local_batch.items()}

    def distribute(self, full_batch: dict) -> dict:
        """A batch every process holds whole, as global arrays: each process contributes only its own rows."""
        return self.global_batch(process_rows(full_batch, jax.process_index(), jax.process_count()))
