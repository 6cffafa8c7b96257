"""Pythia-70M CLM (6 × 512, rotary 25%, parallel residual, untied head, seq 2048) — the LAMBADA comparison.

`:cwt` (default) headless, `:ce` classical. Negative groups of 8 sequences (K = 8 × 2047 = 16 376, the
reference's per-GPU group); K×K logits then take 1 GB, so the blockwise loss is used by budget.
Point `data.sources` at the Pile or similar, e.g. `--config.data.sources=jsonl:gs://bucket/pile/*.jsonl`.
"""
from headless_jax.config import base_config, set_objective


def get_config(loss: str | None = None):
    c = base_config()
    c.model.update(causal=True, vocab_size=50304, num_layers=6, d_model=512, num_heads=8, head_dim=64, mlp_dim=2048,
                   positions="rotary", rotary_fraction=0.25, parallel_residual=True, norm_eps=1e-5,
                   gelu_approximate=False,
                   dtype="bfloat16", remat="dots", scan_layers=True)
    c.objective.update(task="clm", cwt_group_size=8, cwt_memory_budget_mb=512)
    c.data.update(sources="jsonl:/path/to/pile/*.jsonl?field=text", seq_len=2048, packing="windows",
                  tokenizer_sample_chars=200_000_000)
    c.train.update(global_batch_size=1024, num_steps=143_000, eval_every=2000, eval_batches=16,
                   checkpoint_every=1000, permanent_every=10_000)
    c.optim.update(learning_rate=1e-3, warmup_steps=1430, schedule="cosine", min_lr_ratio=0.1, b2=0.95,
                   weight_decay=0.01)
    return set_objective(c, loss, classical_head="untied")
