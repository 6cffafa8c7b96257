"""MEAP (mask-enhanced autoregressive prediction): next-token prediction whose inputs have 15 % of their
positions replaced by [MASK], the targets unchanged; causal attention, no extra cost.

On this codebase's Pythia-160M shape (configs/pythia160m.py); the MEAP paper's own models are LLaMA-style.
`:demo` is the CPU twin on configs/clm_demo.py; `:ce` the classical twin. docs/objectives.md compares the recipes.
"""
from headless_jax.config import recipe_twin


def get_config(arg: str | None = None):
    c = recipe_twin(__file__, arg, paper="pythia160m", demo="clm_demo")
    c.objective.meap_mask_rate = 0.15
    return c
