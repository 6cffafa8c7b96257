"""BERT-base MLM (12 × 768, post-norm, seq 128, 50k vocab) — the headless-LM paper's GLUE comparison.

`:cwt` (default) headless, `:ce` classical. ~4.1B tokens: 62.5k steps × 512 sequences × 128 tokens.
Negative groups of 64 sequences (K = 64 × 19 = 1216, close to the reference's per-GPU 1280).
Point `data.sources` at your corpus, e.g. `--config.data.sources=tfds:wikipedia/20230601.en?field=text`.
"""
from headless_jax.config import base_config, set_objective


def get_config(loss: str | None = None):
    c = base_config()
    c.model.update(causal=False, vocab_size=50304, num_layers=12, d_model=768, num_heads=12, head_dim=64,
                   mlp_dim=3072, norm_position="post", norm_eps=1e-12, positions="learned", max_len=512,
                   dropout_rate=0.1, dtype="bfloat16", gelu_approximate=False)
    c.objective.update(task="mlm", mask_rate=0.15, cwt_group_size=64)
    c.data.update(sources="tfds:wikipedia/20230601.en?split=train&field=text", seq_len=128,
                  tokenizer_sample_chars=200_000_000)
    c.train.update(global_batch_size=512, num_steps=62_500, eval_every=2000, eval_batches=32,
                   checkpoint_every=2000, permanent_every=10_000)
    c.optim.update(learning_rate=5e-4, warmup_steps=6000, schedule="linear", min_lr_ratio=0.0, b2=0.98,
                   weight_decay=0.01)
    return set_objective(c, loss, classical_head="tied")
