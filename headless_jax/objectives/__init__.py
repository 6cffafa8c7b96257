"""Training objectives: CWT (headless) and cross-entropy (classical), for MLM and CLM."""
from headless_jax.objectives.ce import VocabStats, chunked_stats, cross_entropy, logits_stats, vocab_stats
from headless_jax.objectives.cwt import cwt_loss, dense_row_losses
from headless_jax.objectives.cwt_blockwise import blockwise_row_losses
from headless_jax.objectives.masking import MaskedTokens, SpanMasking, SpecialTokens, mask_tokens, num_masked
from headless_jax.objectives.pretraining import (ObjectiveFn, bits_per_byte, build_objective, build_rows_read,
                                                 embedding_index, final_task, next_token_targets, switch_step,
                                                 task_at, trained_tasks)

__all__ = [
    "MaskedTokens", "ObjectiveFn", "SpanMasking", "SpecialTokens", "VocabStats", "bits_per_byte",
    "blockwise_row_losses", "build_objective", "build_rows_read", "embedding_index",
    "chunked_stats", "cross_entropy", "cwt_loss", "dense_row_losses", "logits_stats", "mask_tokens",
    "final_task", "next_token_targets", "num_masked", "switch_step", "task_at", "trained_tasks", "vocab_stats",
]
