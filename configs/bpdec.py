"""BPDec (DrBERT): an enhanced MLM decoder of 2 transformer blocks on top of the encoder, run only in pretraining.
Its first block hides the masked positions (as keys) but a random half of them, the second sees all (gradual
unmasking); half of the training predictions read the encoder's output instead of the decoder's (the random mix).
Fine-tuning, evaluation and export drop the decoder: the downstream model and its cost are the plain encoder's.

The unmasking share and the mix rate are this codebase's defaults (objective.mlm_decoder_*), not values taken
from the paper's text. On this codebase's BERT-base shape (configs/bert_base.py); `:demo` is the CPU twin on
configs/demo.py, `:ce` the classical twin. docs/objectives.md compares the recipes.
"""
from headless_jax.config import recipe_twin


def get_config(arg: str | None = None):
    c = recipe_twin(__file__, arg, paper="bert_base", demo="demo")
    c.model.mlm_decoder_layers = 2
    c.objective.update(mlm_decoder_unmask_rate=0.5, mlm_decoder_encoder_rate=0.5)
    return c
