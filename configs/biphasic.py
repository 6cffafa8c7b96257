"""Biphasic CLM → MLM (the MLM-vs-CLM study): one encoder trained causally on next tokens for the first half of
its steps, then as a bidirectional MLM, with the same parameters and optimiser state (one recompile at the
switch); headless (CWT on both sides) or classical.

On this codebase's BERT-base shape (configs/bert_base.py); `--config.objective.clm_fraction` sets the share of
CLM steps. The study's other route, MLM adaptation of an existing CLM run, is `configs/bert_base.py` (or
`configs/demo.py`) with `--config.train.init_from=CLM_RUN`. `:demo` is the CPU twin on configs/demo.py; `:ce`
the classical twin. docs/objectives.md compares the recipes.
"""
from headless_jax.config import recipe_twin


def get_config(arg: str | None = None):
    c = recipe_twin(__file__, arg, paper="bert_base", demo="demo")
    c.objective.update(task="clm_then_mlm", clm_fraction=0.5)
    return c
