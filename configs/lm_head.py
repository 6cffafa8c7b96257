"""LM-head fine-tuning: a headless decoder (configs/clm_demo.py) becomes a generative LM.

`python -m headless_jax.main --config=configs/lm_head.py --workdir=NEW --config.train.init_from=HEADLESS_RUN`
adds an untied, bias-free vocabulary head initialised as an exact copy of the run's input embeddings E and
trains everything with cross-entropy for a short phase (the paper: 10k steps, < 2% of pretraining tokens),
with a fresh optimiser. `--config.train.trainable=head` is the probe: the body stays frozen.
The model.* keys must be those of the init run (here clm_demo's); the init run's tokenizer is used.
"""
from headless_jax.config import sibling_config


def get_config():
    c = sibling_config(__file__, "clm_demo", "ce")  # the same body and data, classical CE with an untied head
    c.model.head = "untied"
    c.train.update(init_from="", trainable="all", num_steps=100, eval_every=50, checkpoint_every=50)
    c.optim.update(learning_rate=5e-4, warmup_steps=10)
    return c
