"""MLM masking, shared by the CWT and CE objectives (docs/method.md), and MEAP's input masking.

Exactly k = round(rate·L) positions are selected per sequence, so the number of predictions is static
under `jit`: top-k of uniform noise over the eligible positions (not special tokens; padding is the pad
token, a special one). Of the selected: 80% → [MASK], 10% → a random non-special token, 10% unchanged.
Targets are always the original tokens.

Span masking (SpanBERT) cuts each row into spans of whole words (or tokens) with lengths drawn from a
Geometric(p) truncated at a maximum, ranks the spans at random and takes the top k positions span by span:
whole spans until the budget, the last one cut short so that still exactly k positions are selected. The
80/10/10 choice is then made once per span.

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


class SpanMasking(NamedTuple):
    """Span masking's settings: span lengths ~ Geometric(geometric_p) on 1 … max_length (renormalised), counted in
    whole words where `mask_tokens` is given the tokenizer's word starts."""
    geometric_p: float = 0.2
    max_length: int = 10


class MaskedTokens(NamedTuple):
    tokens_BxL: jax.Array  # the corrupted input
    positions_BxK: jax.Array  # selected positions (distinct within a row)
    targets_BxK: jax.Array  # original tokens at those positions
    valid_BxK: jax.Array  # bool: False for slots beyond a row's eligible positions
    span_ids_BxL: jax.Array | None = None  # span masking: the span each position belongs to


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


def span_lengths(rng: jax.Array, shape: tuple[int, ...], spans: SpanMasking) -> jax.Array:
    """Lengths ~ Geometric(p) conditioned on ≤ max_length, by inverse CDF: P(n) ∝ p(1−p)^(n−1), n = 1 … max_length
    (SpanBERT's mean 3.8 at p = 0.2, max 10)."""
    q = 1.0 - spans.geometric_p
    u = jax.random.uniform(rng, shape, minval=0.0, maxval=1.0 - q ** spans.max_length)
    return jnp.clip(jnp.ceil(jnp.log1p(-u) / jnp.log(q)), 1, spans.max_length).astype(jnp.int32)


def span_ids(rng: jax.Array, unit_starts_BxL: jax.Array, spans: SpanMasking) -> jax.Array:
    """int32 [B,L]: the span each position belongs to, spans being runs of units (a unit begins where
    unit_starts_BxL is True: a word, or every token) with span_lengths() units each."""
    batch, seq_len = unit_starts_BxL.shape
    unit_BxL = jnp.cumsum(unit_starts_BxL.at[:, 0].set(True), axis=1) - 1
    span_ends_BxL = jnp.cumsum(span_lengths(rng, (batch, seq_len), spans), axis=1)  # exclusive end, in units
    return jax.vmap(lambda ends, units: jnp.searchsorted(ends, units, side="right"))(span_ends_BxL, unit_BxL)


def _span_selection(rng: jax.Array, eligible_BxL: jax.Array, span_BxL: jax.Array, k: int) -> jax.Array:
    """The k positions of each row taken span by span in a random order of spans (within a span, left to
    right); ineligible positions come last. An integer key keeps the order exact: rank·L + (L − 1 − position)."""
    batch, seq_len = span_BxL.shape
    rank_BxL = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (batch, seq_len)), axis=1), axis=1)  # per span id
    span_rank_BxL = jnp.take_along_axis(rank_BxL, span_BxL, axis=1)
    key_BxL = jnp.where(eligible_BxL, span_rank_BxL * seq_len + (seq_len - 1 - jnp.arange(seq_len)), -1)
    return jax.lax.top_k(key_BxL, k)[1]


def mask_tokens(tokens_BxL: jax.Array, rng: jax.Array, rate: float, special: SpecialTokens,
                vocab_size: int, spans: SpanMasking | None = None, word_starts_V: jax.Array | None = None,
                corruption: tuple[float, float] = (0.8, 0.1)) -> MaskedTokens:
    """Selects k = round(rate·L) positions per row (uniformly, or span by span with `spans`) and corrupts them:
    a share corruption[0] → [MASK], corruption[1] → a random non-special token, the rest unchanged (MEAP: (1, 0)).
    word_starts_V: bool [V], the ids that begin a word; with `spans`, span lengths count whole words."""
    batch, seq_len = tokens_BxL.shape
    k = num_masked(seq_len, rate)
    select_rng, action_rng, replace_rng = jax.random.split(rng, 3)

    eligible_BxL = ~jnp.isin(tokens_BxL, jnp.asarray(special.special_ids))
    if spans is None:
        noise_BxL = jnp.where(eligible_BxL, jax.random.uniform(select_rng, (batch, seq_len)), -jnp.inf)
        positions_BxK, span_BxL = jax.lax.top_k(noise_BxL, k)[1], None
        action_BxK = jax.random.uniform(action_rng, (batch, k))
    else:
        starts_BxL = jnp.ones_like(eligible_BxL)
        if word_starts_V is not None:  # a special token is a unit of its own, and the token after it begins one
            after_special_BxL = jnp.pad(~eligible_BxL[:, :-1], ((0, 0), (1, 0)), constant_values=True)
            starts_BxL = jnp.asarray(word_starts_V)[tokens_BxL] | ~eligible_BxL | after_special_BxL
        span_BxL = span_ids(jax.random.fold_in(select_rng, 1), starts_BxL, spans)
        positions_BxK = _span_selection(select_rng, eligible_BxL, span_BxL, k)
        span_action_BxL = jax.random.uniform(action_rng, (batch, seq_len))  # one draw per span id
        action_BxK = jnp.take_along_axis(span_action_BxL, jnp.take_along_axis(span_BxL, positions_BxK, axis=1), axis=1)
    targets_BxK = jnp.take_along_axis(tokens_BxL, positions_BxK, axis=1)
    valid_BxK = jnp.take_along_axis(eligible_BxL, positions_BxK, axis=1)

    random_BxK = random_non_special(replace_rng, (batch, k), special.special_ids, vocab_size)
    to_mask, to_random = corruption
    corrupted_BxK = jnp.where(action_BxK < to_mask, special.mask_id,
                              jnp.where(action_BxK < to_mask + to_random, random_BxK, targets_BxK))
    corrupted_BxK = jnp.where(valid_BxK, corrupted_BxK, targets_BxK).astype(tokens_BxL.dtype)
    masked_BxL = tokens_BxL.at[jnp.arange(batch)[:, None], positions_BxK].set(corrupted_BxK, unique_indices=True)
    return MaskedTokens(masked_BxL, positions_BxK, targets_BxK, valid_BxK, span_BxL)
