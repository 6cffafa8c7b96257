"""Prefix LM, the architecture × objective study's non-causal decoder: each row's first N tokens (N uniform in
1 … L-1) attend both ways and are inputs only; the loss is next-token prediction on the rest.

On this codebase's Pythia-160M shape (configs/pythia160m.py). `:demo` is the CPU twin on configs/clm_demo.py;
`:ce` the classical twin. docs/objectives.md compares the recipes.
"""
from headless_jax.config import recipe_twin


def get_config(arg: str | None = None):
    c = recipe_twin(__file__, arg, paper="pythia160m", demo="clm_demo")
    c.objective.prefix_length = -1
    return c
