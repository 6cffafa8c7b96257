"""The headless vs classical comparison: `python -m headless_jax.compare --config=configs/comparison.py
--workdir=runs/comparison` pretrains `configs/demo.py` headless (`:cwt`), classical (`:ce`) and as an untrained
control (1 step), fine-tunes each on the books task (configs/books.py: rate and epochs chosen on dev, 3 seeds) and
scores held-out MLM (configs/mlm_eval.py); docs/comparison.md reads its table.

Flags for every pretraining or fine-tuning run go in `pretraining_overrides` / `finetune_overrides`, e.g.
`--config.pretraining_overrides='("--config.train.num_steps=2000",)'`.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.pretraining = "configs/demo.py"  # a twin config: its :LOSS variants are the models
    c.headless_loss = "cwt"
    c.classical_loss = "ce"
    c.control_loss = "ce"  # the untrained control: this twin after control_steps steps
    c.control_steps = 1
    c.pretraining_overrides = ()  # flags given to every pretraining run
    c.finetune = "configs/books.py"
    c.finetune_overrides = ()  # flags given to every fine-tuning run
    c.mlm_eval = True  # also the held-out MLM metrics at one reference masking (configs/mlm_eval.py)
    c.mlm_eval_overrides = ()
    return c
