"""The embedded default: a small MLM encoder on the bundled novels, ~5 minutes on 2 CPU cores.

Headless (CWT) by default; `--config=configs/demo.py:ce` is its classical twin, `:cwt+ce` the mixture.
"""
from headless_jax.config import base_config, set_objective


def get_config(loss: str | None = None):
    c = base_config()
    c.model.update(causal=False, vocab_size=8192, num_layers=2, d_model=128, num_heads=2, head_dim=64,
                   mlp_dim=512, max_len=128, norm_position="pre")
    c.objective.update(task="mlm", mask_rate=0.15, cwt_group_size=0)
    c.data.update(sources="embedded", seq_len=128)
    c.train.update(global_batch_size=32, num_steps=600, log_every=20, eval_every=200, eval_batches=8,
                   checkpoint_every=200)
    c.optim.update(learning_rate=2e-3, warmup_steps=60, schedule="cosine")
    return set_objective(c, loss, classical_head="tied")
