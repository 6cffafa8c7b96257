"""Multilingual DistilmBERT-size MLM (6 × 768, 119k vocab) for XNLI, several languages mixed with α = 0.3.

`:cwt` (default) headless, `:ce` classical. List one source per language in `data.sources`; source i is
sampled with probability ∝ n_i^0.3, as for mBERT/XLM-R.
"""
from headless_jax.config import base_config, set_objective

LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")


def get_config(loss: str | None = None):
    c = base_config()
    c.model.update(causal=False, vocab_size=119552, num_layers=6, d_model=768, num_heads=12, head_dim=64,
                   mlp_dim=3072, norm_position="post", norm_eps=1e-12, max_len=512, dropout_rate=0.1,
                   dtype="bfloat16", gelu_approximate=False)
    c.objective.update(task="mlm", mask_rate=0.15, cwt_group_size=64)
    c.data.update(sources=",".join(f"tfds:wikipedia/20230601.{lang}?split=train&field=text" for lang in LANGUAGES),
                  mixing_alpha=0.3, seq_len=128, tokenizer_sample_chars=300_000_000)
    c.train.update(global_batch_size=512, num_steps=100_000, eval_every=2000, checkpoint_every=2000,
                   permanent_every=10_000)
    c.optim.update(learning_rate=5e-4, warmup_steps=6000, schedule="linear", min_lr_ratio=0.0)
    return set_objective(c, loss, classical_head="tied")
