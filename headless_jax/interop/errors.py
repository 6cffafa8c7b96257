"""The error of everything in headless_jax.interop."""


class InteropError(ValueError):
    """A model, checkpoint or directory that cannot cross between headless_jax and transformers; the message names
    why and the fix."""
