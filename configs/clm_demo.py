"""A small causal decoder on the bundled novels: headless (CWT) by default, `:ce` for the classical twin."""
from headless_jax.config import base_config, set_objective


def get_config(loss: str | None = None):
    c = base_config()
    c.model.update(causal=True, vocab_size=8192, num_layers=2, d_model=128, num_heads=2, head_dim=64, mlp_dim=512,
                   positions="rotary", rotary_fraction=0.25, parallel_residual=True, max_len=128)
    c.objective.update(task="clm", cwt_group_size=4)
    c.data.update(sources="embedded", seq_len=128)
    c.train.update(global_batch_size=16, num_steps=600, log_every=20, eval_every=200, eval_batches=8,
                   checkpoint_every=200)
    c.optim.update(learning_rate=2e-3, warmup_steps=60)
    return set_objective(c, loss, classical_head="untied")
