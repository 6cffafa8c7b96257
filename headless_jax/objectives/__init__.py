"""Training objectives: CWT (headless) and cross-entropy (classical), for MLM, CLM and ELECTRA."""
from headless_jax.objectives.ce import VocabStats, chunked_stats, cross_entropy, logits_stats, vocab_sample, vocab_stats
from headless_jax.objectives.cwt import cwt_loss, cwt_sample, dense_row_losses
from headless_jax.objectives.cwt_blockwise import blockwise_row_losses
from headless_jax.objectives.electra import replaced_tokens
from headless_jax.objectives.masking import MaskedTokens, SpanMasking, SpecialTokens, mask_tokens, num_masked
from headless_jax.objectives.pretraining import bits_per_byte, build_objective
from headless_jax.objectives.tasks import (MASKED_TASKS, ObjectiveFn, build_rows_read, embedding_index, final_task,
                                           next_token_targets, switch_step, task_at, trained_tasks)

__all__ = [
    "MASKED_TASKS", "MaskedTokens", "ObjectiveFn", "SpanMasking", "SpecialTokens", "VocabStats", "bits_per_byte",
    "blockwise_row_losses", "build_objective", "build_rows_read", "embedding_index",
    "chunked_stats", "cross_entropy", "cwt_loss", "cwt_sample", "dense_row_losses", "logits_stats", "mask_tokens",
    "final_task", "next_token_targets", "num_masked", "replaced_tokens", "switch_step", "task_at", "trained_tasks",
    "vocab_sample", "vocab_stats",
]
