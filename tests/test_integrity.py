"""Checkpoint checksums: equal to a NumPy reference, the same on any mesh, and changed by any damaged word."""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from headless_jax.train.integrity import checksums, mismatches


def reference(x: np.ndarray) -> str:
    """The two sums in exact integer arithmetic (Python ints), reduced modulo 2^32 at the end."""
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
    words = [int(w) for w in np.ascontiguousarray(x).view(unsigned).reshape(-1)]
    plain = sum(words) % 2**32
    weighted = sum(w * (2 * i + 1) for i, w in enumerate(words)) % 2**32
    return f"{plain:08x}{weighted:08x}"


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.int32, np.uint32])
def test_checksums_equal_the_exact_integer_reference(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 53)) * 1e4).astype(dtype)
    assert checksums({"x": jnp.asarray(x)}) == {"x": reference(x)}


def test_checksums_do_not_depend_on_the_mesh():
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 48))
    mesh = jax.make_mesh((4, 2), ("a", "b"))
    for spec in (PartitionSpec("a", "b"), PartitionSpec("b", None), PartitionSpec(None, ("a", "b"))):
        sharded = jax.device_put(x, NamedSharding(mesh, spec))
        assert checksums({"x": sharded}) == {"x": reference(np.asarray(x))}


def test_a_changed_or_moved_word_is_caught():
    x = np.random.default_rng(2).standard_normal((16, 16)).astype(np.float32)
    state = {"params": {"w": jnp.asarray(x)}, "step": jnp.int32(7)}
    saved = checksums(state)
    flipped = x.copy()
    flipped.view(np.uint32)[3, 5] ^= 1  # one bit
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # the same words, in other places: only the weighted sum sees it
    for damaged in (flipped, swapped):
        assert mismatches({"params": {"w": jnp.asarray(damaged)}, "step": jnp.int32(7)}, saved) == ["params/w"]
    assert mismatches(state, saved) == []
    assert mismatches({"params": {"w": jnp.asarray(x)}}, saved) == ["step"]  # a missing array counts
