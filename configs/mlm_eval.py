"""Held-out MLM scoring of a pretrained encoder at one reference masking (token masking, 15 %, fixed seed), so that
encoders trained with different recipes (30 % masking, spans, CLM → MLM) are compared on the same predictions:
`python -m headless_jax.evaluate --config=configs/mlm_eval.py --workdir=DIR --config.pretrained=RUN`.
"""
from headless_jax.downstream.config import downstream_base_config


def get_config():
    c = downstream_base_config("mlm_eval")
    c.mask_rate = 0.15
    c.sources = ""  # as data.sources; empty: the pretraining run's own sources (their held-out tails)
    c.batch_size = 32  # rows per batch (a multiple of the batch shards)
    c.eval_batches = 16  # batches per source
    return c
