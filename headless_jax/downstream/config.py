"""Keys every downstream config has: which pretrained run to start from, the mesh, the seed.

Downstream configs (`configs/glue.py`, `configs/books.py`, ...) call `downstream_base_config(kind)` and add
their own sections; `kind` picks the runner in `headless_jax.evaluate.RUNNERS`.
"""
import ml_collections

from headless_jax.config import base_config


def downstream_base_config(kind: str) -> ml_collections.ConfigDict:
    pretraining = base_config()
    c = ml_collections.ConfigDict()
    c.kind = kind
    c.seed = 0
    c.pretrained = ""  # workdir of the pretraining run (local or gs://): its checkpoints/ and tokenizer.model
    c.pretrained_step = 0  # 0: the latest checkpoint
    c.tokenizer_model = ""  # optional: checked against the pretraining run's tokenizer, never silently swapped
    c.mesh = pretraining.mesh  # the mesh to restore onto: any device count, whatever the pretraining used
    c.distributed = pretraining.distributed
    return c
