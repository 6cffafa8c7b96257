"""MLM masking: exactly k eligible positions, 80/10/10 corruption, original targets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headless_jax.objectives.masking import SpecialTokens, mask_tokens, num_masked, random_non_special

VOCAB = 1000
SPECIAL = SpecialTokens()  # mask 4, specials 0..6, pad 0


def token_rows(seed, batch, length, eligible_counts):
    """[cls] w … w [sep] pad …: row i has eligible_counts[i] ordinary tokens (ids ≥ 7)."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((batch, length), np.int32)
    for row, count in enumerate(eligible_counts):
        tokens[row, 0], tokens[row, count + 1] = 5, 6
        tokens[row, 1:count + 1] = rng.integers(7, VOCAB, count)
    return jnp.asarray(tokens)


masking = jax.jit(mask_tokens, static_argnums=(2, 3, 4))


def test_exactly_k_eligible_positions_per_row():
    length = 40
    k = num_masked(length, 0.15)
    counts = [38, 20, 6, 3, 0]  # the last three rows have fewer eligible positions than k = 6
    tokens = token_rows(0, 5, length, counts)
    out = masking(tokens, jax.random.key(1), 0.15, SPECIAL, VOCAB)
    positions, valid = np.asarray(out.positions_BxK), np.asarray(out.valid_BxK)
    assert positions.shape == (5, k) == valid.shape
    for row, count in enumerate(counts):
        assert len(set(positions[row])) == k  # distinct
        chosen = positions[row][valid[row]]
        assert len(chosen) == min(k, count)
        assert np.all((chosen >= 1) & (chosen <= count))  # never [cls], [sep] or padding
        if count <= k:  # a short row gets all of its eligible positions
            np.testing.assert_array_equal(np.sort(chosen), np.arange(1, count + 1))
    np.testing.assert_array_equal(out.targets_BxK, np.take_along_axis(np.asarray(tokens), positions, 1))
    # Invalid slots point at special tokens and leave them as they were.
    assert np.all(np.isin(np.asarray(out.targets_BxK)[~valid], SPECIAL.special_ids))
    special = np.isin(tokens, SPECIAL.special_ids)
    np.testing.assert_array_equal(np.asarray(out.tokens_BxL)[special], np.asarray(tokens)[special])


def test_corruption_is_80_10_10_and_only_at_selected_positions():
    batch, length = 1000, 100
    tokens = token_rows(2, batch, length, [90] * batch)
    out = masking(tokens, jax.random.key(3), 0.3, SPECIAL, VOCAB)
    tokens, masked, positions = np.asarray(tokens), np.asarray(out.tokens_BxL), np.asarray(out.positions_BxK)
    assert positions.shape[1] == 30 and np.all(out.valid_BxK)

    selected = np.zeros(tokens.shape, bool)
    np.put_along_axis(selected, positions, True, axis=1)
    np.testing.assert_array_equal(masked[~selected], tokens[~selected])  # unselected: untouched
    original, corrupted = tokens[selected], masked[selected]
    is_mask = corrupted == SPECIAL.mask_id
    is_random = ~is_mask & (corrupted != original)
    assert len(original) == 30_000  # the fractions' standard deviation is ≤ 0.003
    assert abs(is_mask.mean() - 0.8) < 0.012
    assert abs(is_random.mean() - 0.1) < 0.01  # a random token equal to the original (p ≈ 0.001) counts as kept
    assert abs((corrupted == original).mean() - 0.1) < 0.01
    assert np.all(corrupted[is_random] >= 7)  # random replacements are never special


def test_random_replacements_are_uniform_over_non_special_ids():
    special_ids, vocab = (0, 3, 4, 9), 12
    draws = np.asarray(random_non_special(jax.random.key(4), (80_000,), special_ids, vocab))
    allowed = [v for v in range(vocab) if v not in special_ids]
    values, counts = np.unique(draws, return_counts=True)
    np.testing.assert_array_equal(values, allowed)
    np.testing.assert_allclose(counts / len(draws), 1 / len(allowed), atol=0.006)  # 8 ids: 0.125 ± 0.0012 (1 sd)


def test_masking_is_a_pure_function_of_its_inputs():
    tokens = token_rows(5, 4, 32, [30, 30, 10, 20])
    a, b = (masking(tokens, jax.random.key(6), 0.15, SPECIAL, VOCAB) for _ in range(2))
    c = masking(tokens, jax.random.key(7), 0.15, SPECIAL, VOCAB)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.positions_BxK, c.positions_BxK)


def test_k_is_rounded_rate_times_length():
    assert num_masked(128, 0.15) == 19 and num_masked(128, 0.30) == 38 and num_masked(10, 0.25) == 3
    with pytest.raises(ValueError, match="mask_rate"):
        num_masked(3, 0.1)
