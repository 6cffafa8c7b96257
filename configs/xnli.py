"""XNLI zero-shot transfer: fine-tune on English MultiNLI (GLUE MNLI), test all 15 XNLI languages, average.

`python -m headless_jax.evaluate --config=configs/xnli.py --workdir=DIR --config.pretrained=RUN
--config.xnli.dir=XNLI-1.0 [--config.data_source=tsv --config.data_dir=GLUE_DIR]`
"""
from headless_jax.downstream.finetune_config import classify_base_config


def get_config():
    c = classify_base_config("xnli")
    c.optim.learning_rate = 3e-5
    c.epochs = 2
    return c
