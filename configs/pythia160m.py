"""Pythia-160M CLM (12 × 768, 12 heads, MLP 3072, rotary 25%, parallel residual, untied head, seq 2048).

The next Pythia size after configs/pythia70m.py (same data, schedule and negative groups; Pythia-160M's
peak learning rate 6e-4), and the larger shape of the MFU benchmark. `:cwt` (default) headless, `:ce`
classical. Negative groups of 8 sequences (K = 16 376), blockwise CWT by memory budget.
"""
from headless_jax.config import sibling_config


def get_config(loss: str | None = None):
    c = sibling_config(__file__, "pythia70m", loss)
    c.model.update(num_layers=12, d_model=768, num_heads=12, head_dim=64, mlp_dim=3072)
    c.optim.learning_rate = 6e-4
    return c
