"""MosaicBERT's masking recipe: MLM at 30 % masking, held-out MLM scored at 15 % (as MosaicBERT and ModernBERT).

The recipe on this codebase's BERT-base shape (configs/bert_base.py); MosaicBERT's architecture changes (ALiBi,
gated MLP, unpadding) are not part of it. `:demo` is the CPU twin on configs/demo.py; `:ce` the classical twin
(`:ce,demo` both). docs/objectives.md compares the recipes.
"""
from headless_jax.config import recipe_twin


def get_config(arg: str | None = None):
    c = recipe_twin(__file__, arg, paper="bert_base", demo="demo")
    c.objective.update(mask_rate=0.30, eval_mask_rate=0.15)
    return c
