"""ELECTRA's replaced-token detection: a generator a third of the model's width (ELECTRA-base: 256 of 768, same
depth, sharing E) fills 15 % masked positions (85 % [MASK], 15 % kept); the model, the discriminator, labels every
token original or replaced; loss = generator loss + 50 · BCE. Only the discriminator is kept.

Headless by default: the generator is trained with CWT and samples its replacements from its own CWT distribution
over the in-batch targets (no vocabulary softmax anywhere in the step). `:ce` is the classical twin (generator
softmax over the vocabulary, tied to E). On this codebase's BERT-base shape (configs/bert_base.py); `:demo` is the
CPU twin on configs/demo.py. docs/objectives.md compares the recipes.
"""
from headless_jax.config import recipe_twin


def get_config(arg: str | None = None):
    c = recipe_twin(__file__, arg, paper="bert_base", demo="demo")
    c.objective.update(task="electra", electra_weight=50.0, mask_rate=0.15)
    c.model.electra_generator = 1 / 3
    return c
