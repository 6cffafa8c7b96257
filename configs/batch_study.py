"""The batch-size study: GPT-2-tiny (3 × 192) CLM at a chosen global batch (= negative-group size).

`--config=configs/batch_study.py:cwt,64` or `:ce,256` (loss, global batch in sequences). With
`cwt_group_size=0` the whole batch is one negative group, so the batch size is the number of negatives.
"""
from headless_jax.config import base_config, set_objective


def get_config(arg: str | None = None):
    loss, batch = (arg or "cwt,64").split(",")
    c = base_config()
    c.model.update(causal=True, vocab_size=50304, num_layers=3, d_model=192, num_heads=3, head_dim=64, mlp_dim=768,
                   positions="learned", max_len=512)
    c.objective.update(task="clm", cwt_group_size=0)
    c.data.update(sources="tfds:openwebtext?split=train&field=text", seq_len=512)
    c.train.update(global_batch_size=int(batch), num_steps=50_000, eval_every=1000, checkpoint_every=1000)
    c.optim.update(learning_rate=6e-4, warmup_steps=1000, schedule="cosine")
    return set_objective(c, loss, classical_head="tied")
