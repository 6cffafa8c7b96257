"""The routing terms of the loss (DESIGN §1.4): the skip budget loss, the causal predictor's BCE, and metrics.

`routing_vars` is the `routing` collection a LanguageModel sows when applied with `mutable=["routing"]`.
"""
import jax
import jax.numpy as jnp

from headless_jax.model.routing import layer_stats


def routing_terms(model_cfg, routing_vars: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss term, metrics). skip: λ·Σ_l (r_l − P)² with r_l the executed fraction of routed layer l (soft
    gradient through the straight-through gates); topk, causal: predictor_weight·Σ_l BCE_l."""
    stats = layer_stats(routing_vars)
    if not stats:
        return jnp.float32(0.0), {}
    routing, fractions = model_cfg.routing, stats["executed_fraction"]
    metrics = {f"routing/executed_fraction/layer_{i}": r for i, r in sorted(fractions.items())}
    metrics["routing/executed_fraction"] = sum(fractions.values()) / len(fractions)
    loss = jnp.float32(0.0)
    if routing.kind == "skip":
        metrics["routing/budget_loss"] = routing.budget_weight * sum(
            jnp.square(r - routing.target) for r in fractions.values())
        loss += metrics["routing/budget_loss"]
    if "predictor_loss" in stats:
        metrics["routing/predictor_loss"] = sum(stats["predictor_loss"].values())
        metrics["routing/predictor_accuracy"] = sum(stats["predictor_accuracy"].values()) / len(fractions)
        loss += routing.predictor_weight * metrics["routing/predictor_loss"]
    return loss, metrics
