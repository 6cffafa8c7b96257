"""Downstream use of a pretrained run: fine-tuning and evaluation, from `python -m headless_jax.evaluate`."""
