"""The streaming draw of ELECTRA's generators (objectives/reduce.py): the inverse CDF against a float64 search, its
rounding guards, and draws over many column blocks against the float64 softmax."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headless_jax.objectives.reduce import SUB_BLOCK, inverse_cdf, sample_step

DRAWS = 40_000


@pytest.mark.parametrize("columns", [5, SUB_BLOCK, 3 * SUB_BLOCK + 44])
def test_inverse_cdf_finds_the_column_a_float64_search_finds(columns):
    """Targets halfway through a column's share of the running sum (far from any rounding) land in that column,
    across sub-blocks; zero-weight columns are never chosen."""
    rng = np.random.default_rng(0)
    weights = rng.random((64, columns)) * (rng.random((64, columns)) < 0.6)
    weights[:, 0] = 0.0  # a leading zero is skipped, not chosen
    weights[np.arange(64), rng.integers(1, columns, 64)] += 0.5  # every row has a positive column
    running = np.cumsum(weights, -1)
    expected = np.array([rng.choice(np.flatnonzero(row)) for row in weights])
    rows = np.arange(64)
    target = running[rows, expected] - weights[rows, expected] / 2
    found = np.asarray(inverse_cdf(jnp.asarray(weights, jnp.float32), jnp.asarray(target, jnp.float32)))
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_array_equal([np.searchsorted(running[r], target[r], side="right") for r in rows], expected)


def test_inverse_cdf_past_the_total_gives_the_last_positive_column():
    weights = np.zeros((3, 2 * SUB_BLOCK + 7), np.float32)
    weights[0, [3, 140, 200]] = 1.0  # the last positive column sits before trailing zeros, in another sub-block
    weights[1, [5, 9]] = 2.0
    target = np.array([3.0, 4.5, 0.0], np.float32)  # at or past each row's total (rounding's worst case)
    np.testing.assert_array_equal(inverse_cdf(jnp.asarray(weights), jnp.asarray(target)), [200, 9, 0])


def streamed_draws(logits: np.ndarray, block: int, seed: int) -> np.ndarray:
    """DRAWS draws per row of `logits` [N,C], fed to sample_step `block` columns at a time."""
    rows, columns = logits.shape
    blocks = np.pad(logits, ((0, 0), (0, -columns % block)), constant_values=-np.inf)
    blocks = jnp.asarray(blocks.reshape(rows, -1, block).transpose(1, 0, 2), jnp.float32)
    index = jnp.arange(blocks.shape[0] * block).reshape(-1, block)

    def draw(key):
        def step(carry, block_and_index):
            logits_NxC, index_C = block_and_index
            return sample_step(*carry, logits_NxC, index_C, jax.random.fold_in(key, index_C[0])), None
        init = (jnp.full((rows,), -jnp.inf), jnp.zeros((rows,)), jnp.zeros((rows,), jnp.int32))
        return jax.lax.scan(step, init, (blocks, index))[0][2]

    return np.asarray(jax.jit(jax.vmap(draw))(jax.random.split(jax.random.key(seed), DRAWS)))


@pytest.mark.parametrize("block", [7, 300])
def test_streamed_draws_follow_the_float64_softmax(block):
    """300 columns of which some are −inf, one row whose first blocks hold nothing, one whose mass is all in its
    last column: the frequencies are the float64 softmax's, and a −inf column is never drawn."""
    rng = np.random.default_rng(1)
    logits = 2.0 * rng.normal(size=(4, 300))
    logits[:, rng.random(300) < 0.3] = -np.inf
    logits[1, :150] = -np.inf  # nothing until the 150th column
    logits[2, :] = -np.inf
    logits[2, -1] = 0.0  # a single column, the last one
    drawn = streamed_draws(logits, block, seed=block)
    for row in range(4):
        probabilities = np.exp(logits[row] - logits[row].max())
        probabilities /= probabilities.sum()
        frequencies = np.bincount(drawn[:, row], minlength=300) / DRAWS
        np.testing.assert_allclose(frequencies, probabilities, atol=0.01)
        assert not np.any(frequencies[np.isneginf(logits[row])]), row
        # Beyond each column's tolerance: the total variation distance of the whole law stays small.
        assert 0.5 * np.abs(frequencies - probabilities).sum() < 0.04, row
