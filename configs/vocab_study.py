"""The vocabulary-size study: BERT-small (L4-H512) MLM at a chosen vocabulary size.

`--config=configs/vocab_study.py:cwt,32768` or `:ce,200000` (loss, vocabulary size). The paper found the
classical model slowing ~11× from 20k to 200k tokens while the headless one stays ~flat to 85k.
"""
from headless_jax.config import base_config, set_objective


def get_config(arg: str | None = None):
    loss, vocab_size = (arg or "cwt,32768").split(",")
    c = base_config()
    c.model.update(causal=False, vocab_size=int(vocab_size), num_layers=4, d_model=512, num_heads=8, head_dim=64,
                   mlp_dim=2048, norm_position="post", norm_eps=1e-12, max_len=128, dtype="bfloat16")
    c.objective.update(task="mlm", mask_rate=0.15, cwt_group_size=64)
    c.data.update(sources="tfds:wikipedia/20230601.en?split=train&field=text", seq_len=128)
    c.train.update(global_batch_size=256, num_steps=100_000, eval_every=2000, checkpoint_every=2000)
    c.optim.update(learning_rate=1e-3, warmup_steps=2000, schedule="linear", min_lr_ratio=0.0)
    return set_objective(c, loss, classical_head="tied")
