"""MLM masking, shared by the CWT and CE objectives (docs/method.md).

Exactly k = round(rate·L) positions are selected per sequence, so the number of predictions is static
under `jit`: top-k of uniform noise over the eligible positions (not special tokens; padding is the pad
token, a special one). Of the selected: 80% → [MASK], 10% → a random non-special token, 10% unchanged.
Targets are always the original tokens.

A sequence with fewer than k eligible positions (a short padded document) still yields k slots: the
extra slots point at ineligible positions, are marked invalid (valid = False) and are left uncorrupted.
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

# The tokenizer's fixed ids (headless_jax/data/tokenizer.py): pad, unk, bos, eos, mask, cls, sep.
DEFAULT_SPECIAL_IDS = (0, 1, 2, 3, 4, 5, 6)
DEFAULT_MASK_ID = 4


class SpecialTokens(NamedTuple):
    """What the objectives need to know of the tokenizer, so that they do not depend on SentencePiece."""
    mask_id: int = DEFAULT_MASK_ID
    special_ids: tuple[int, ...] = DEFAULT_SPECIAL_IDS  # never selected, never a random replacement


class MaskedTokens(NamedTuple):
    tokens_BxL: jax.Array  # the corrupted input
    positions_BxK: jax.Array  # selected positions (distinct within a row)
    targets_BxK: jax.Array  # original tokens at those positions
    valid_BxK: jax.Array  # bool: False for slots beyond a row's eligible positions


def num_masked(seq_len: int, rate: float) -> int:
    """k = round(rate·L), halves rounded up (Python's round() would round 2.5 to 2)."""
    k = math.floor(rate * seq_len + 0.5)
    if not 0 < k <= seq_len:
        raise ValueError(f"mask rate {rate} selects {k} of {seq_len} positions; set "
                         f"--config.objective.mask_rate in (0, 1] with rate·seq_len ≥ 0.5")
    return k


def random_non_special(rng: jax.Array, shape: tuple[int, ...], special_ids: tuple[int, ...],
                       vocab_size: int) -> jax.Array:
    """Tokens uniform over the ids not in special_ids: draw r < #non-special, then step over each special id ≤ it."""
    tokens = jax.random.randint(rng, shape, 0, vocab_size - len(set(special_ids)))
    for special_id in sorted(set(special_ids)):
        tokens = tokens + (tokens >= special_id)
    return tokens


def mask_tokens(tokens_BxL: jax.Array, rng: jax.Array, rate: float, special: SpecialTokens,
                vocab_size: int) -> MaskedTokens:
    batch, seq_len = tokens_BxL.shape
    k = num_masked(seq_len, rate)
    select_rng, action_rng, replace_rng = jax.random.split(rng, 3)

    eligible_BxL = ~jnp.isin(tokens_BxL, jnp.asarray(special.special_ids))
    noise_BxL = jnp.where(eligible_BxL, jax.random.uniform(select_rng, (batch, seq_len)), -jnp.inf)
    _, positions_BxK = jax.lax.top_k(noise_BxL, k)
    targets_BxK = jnp.take_along_axis(tokens_BxL, positions_BxK, axis=1)
    valid_BxK = jnp.take_along_axis(eligible_BxL, positions_BxK, axis=1)

    action_BxK = jax.random.uniform(action_rng, (batch, k))
    random_BxK = random_non_special(replace_rng, (batch, k), special.special_ids, vocab_size)
    corrupted_BxK = jnp.where(action_BxK < 0.8, special.mask_id, jnp.where(action_BxK < 0.9, random_BxK, targets_BxK))
    corrupted_BxK = jnp.where(valid_BxK, corrupted_BxK, targets_BxK).astype(tokens_BxL.dtype)
    masked_BxL = tokens_BxL.at[jnp.arange(batch)[:, None], positions_BxK].set(corrupted_BxK, unique_indices=True)
    return MaskedTokens(masked_BxL, positions_BxK, targets_BxK, valid_BxK)
