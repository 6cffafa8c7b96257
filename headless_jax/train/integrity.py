"""Checksums of a train state: written with every checkpoint, checked after every restore.

Damaged bytes on disk (a bad sector, a partial overwrite) can restore without any error as other numbers
(an embedding entry of -1e27); only a checksum of the values tells. It is computed where the state lives,
sharded over the mesh (nothing is gathered to a host), and it is exact on any mesh and process count: the
sums are of the values' bit patterns as uint32 and wrap modulo 2^32, so their order does not matter. Per
array it keeps two sums, of the words and of the words times their odd position weight (2i + 1): any single
changed word changes both, and moved or swapped words change the second.
"""
import jax
import jax.numpy as jnp
import numpy as np

ALGORITHM = "uint32 word sum and odd-position-weighted sum, modulo 2^32"
_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _words(x: jax.Array) -> jax.Array:
    """The array's bit patterns as uint32 words (8-byte values become two words along a new last axis)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    if x.dtype.itemsize == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(x, _UNSIGNED[x.dtype.itemsize]).astype(jnp.uint32)


def _sums(x: jax.Array) -> jax.Array:
    words = _words(x)
    # the row-major position of each word, built from iotas (a reshape could move a sharded array's data)
    position = jnp.zeros(words.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(words.ndim)):
        position = position + jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride)
        stride *= words.shape[axis]
    weight = position * jnp.uint32(2) + jnp.uint32(1)
    return jnp.stack([words.sum(dtype=jnp.uint32), (words * weight).sum(dtype=jnp.uint32)])


# one program per array shape, dtype and sharding, shared by the many arrays of a model that have them; run one
# at a time (programs with collectives dispatched together can deadlock the CPU backend's fake devices)
_leaf_sums = jax.jit(_sums)


def checksums(state: dict) -> dict[str, str]:
    """`path/of/array` → its two sums in hex, for every array of `state` (called on every process)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(path, simple=True, separator="/"):
            "".join(f"{int(v):08x}" for v in np.asarray(jax.device_get(_leaf_sums(x)))) for path, x in flat}


def mismatches(state: dict, saved: dict[str, str]) -> list[str]:
    """The paths whose checksum differs from `saved` (arrays missing on either side included)."""
    now = checksums(state)
    return sorted(path for path in now.keys() | saved.keys() if now.get(path) != saved.get(path))
