"""SpanBERT's masking: whole-word spans with lengths ~ Geometric(0.2) clipped at 10 words (mean 3.8), 15 % of the
tokens, the 80/10/10 choice made per span; a static number of predictions per row.

On this codebase's BERT-base shape (configs/bert_base.py) at SpanBERT's sequence length 512 (SpanBERT also drops
next-sentence prediction, which this codebase never had; its span-boundary objective is not part of the recipe).
`:demo` is the CPU twin on configs/demo.py; `:ce` the classical twin. docs/objectives.md compares the recipes.
"""
from headless_jax.config import recipe_twin


def get_config(arg: str | None = None):
    c = recipe_twin(__file__, arg, paper="bert_base", demo="demo")
    c.objective.update(masking="spans", span_geometric_p=0.2, span_max_length=10, span_whole_words=True,
                       mask_rate=0.15)
    if "demo" not in (arg or ""):
        c.data.seq_len = 512
        c.objective.cwt_group_size = 16  # K = 16 × 77 = 1232 predictions, as bert_base's 64 × 19
    return c
