"""The headless vs classical comparison: `python -m headless_jax.compare --config=configs/comparison.py
--workdir=runs/comparison` pretrains `configs/demo.py` headless (`:cwt`), classical (`:ce`) and as an untrained
control (1 step), fine-tunes each on the books task (configs/books.py: rate and epochs chosen on dev, 3 seeds) and
scores held-out MLM (configs/mlm_eval.py); docs/comparison.md reads its table.

`--config=configs/comparison.py:study` is the same comparison at the CPU study scale: configs/study.py, ~30
minutes of pretraining per twin on 2 cores, scored by fine-tuning and by a linear probe (configs/books.py:probe);
docs/comparison.md reads its result.
configs/recipes_comparison.py lists more models (the recipes of docs/objectives.md).

Flags for every pretraining or fine-tuning run go in `pretraining_overrides` / `finetune_overrides`, e.g.
`--config.pretraining_overrides='("--config.train.num_steps=2000",)'`.
"""
import ml_collections

SCALES = {"demo": "configs/demo.py", "study": "configs/study.py"}


def get_config(scale: str | None = None):
    if (scale or "demo") not in SCALES:
        raise ValueError(f"configs/comparison.py: unknown scale {scale!r}; choose from {sorted(SCALES)}")
    c = ml_collections.ConfigDict()
    c.pretraining = SCALES[scale or "demo"]  # a twin config: its :LOSS variants are the models
    c.headless_loss = "cwt"
    c.classical_loss = "ce"
    # Or the models by hand: (name, config spec, flag, ...) each, e.g. ("span", "configs/spanbert.py:demo"); the
    # control below is added to them.
    c.models = ()
    c.pretraining_seeds = (0,)  # each model is pretrained once per seed (`--config.seed`); the control once
    c.control_loss = "ce"  # the untrained control: `pretraining:control_loss` after control_steps steps
    c.control_steps = 1  # 0: no control
    c.pretraining_overrides = ()  # flags given to every pretraining run
    # Encoders: the books-task settings, each (name, config spec, flag, ...), scored into `<run>_<name>/`.
    c.finetune = (("books", "configs/books.py"),)
    c.finetune_overrides = ()  # flags given to every fine-tuning run
    c.mlm_eval = True  # encoders with an MLM head: held-out MLM at one reference masking (configs/mlm_eval.py)
    c.mlm_eval_overrides = ()
    c.lm_eval = True  # decoders: held-out perplexity and last-word accuracy (configs/lm_eval.py)
    c.lm_eval_overrides = ()
    # Headless decoders: also scored after this LM-head phase (init_from the run, pretraining_overrides too; its
    # model.* keys must be the run's); empty: o·Eᵀ alone.
    c.lm_head = "configs/lm_head.py"
    c.pairs = ()  # (a, b) pairs whose books difference the table reads; empty: every pair
    if scale == "study":  # fine-tuning and a linear probe: the probe reads the pretrained features as they are
        c.finetune = (*c.finetune, ("books_probe", "configs/books.py:probe"))
    return c
