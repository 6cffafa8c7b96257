"""GLUE fine-tuning of a pretrained encoder: `python -m headless_jax.evaluate --config=configs/glue.py:sst2
--workdir=DIR --config.pretrained=PRETRAIN_WORKDIR [--config.data_source=tsv --config.data_dir=GLUE_DIR]`.

The argument picks the task(s): one name, several (`:rte,mrpc`), or `glue` (default) for all nine.
BERT-style recipe: 3 epochs, lr 2e-5, batch 32, linear decay after 10% warmup, 3 seeds.
"""
from headless_jax.downstream.finetune_config import classify_base_config


def get_config(tasks: str | None = None):
    return classify_base_config(tasks or "glue")
