"""The CPU study scale (issue 17): the demo's encoder pretrained ~17× longer, ~30 minutes per twin on 2 CPU cores.

`configs/demo.py` stops at 600 steps, where pretraining has taught the model little beyond word frequencies (held-out
MLM accuracy 9-12 %) and a 1-step control fine-tunes as well as either twin. Here the same shape sees ~40M tokens
(~30 passes over the embedded novels): `configs/comparison.py:study` then separates the pretrained twins from the
untrained control on the books probe and the held-out MLM metrics (docs/comparison.md). Headless (CWT) by default;
`:ce` is its classical twin.
"""
from headless_jax.config import sibling_config


def get_config(loss: str | None = None):
    c = sibling_config(__file__, "demo", loss)
    c.train.update(num_steps=10_000, log_every=100, eval_every=1000, eval_batches=16, checkpoint_every=1000)
    c.optim.update(warmup_steps=300)
    return c
