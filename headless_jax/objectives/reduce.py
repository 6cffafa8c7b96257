"""The one reduction every loss and metric here uses: a weighted mean over predicted tokens."""
import jax
import jax.numpy as jnp


def weighted_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ w·x / max(Σ w, 1) in float32: a batch with no valid token gives 0, never NaN."""
    weights = weights.astype(jnp.float32)
    return jnp.sum(weights * x.astype(jnp.float32)) / jnp.maximum(jnp.sum(weights), 1.0)
