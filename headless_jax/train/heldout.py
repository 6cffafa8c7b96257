"""Held-out metrics: the means the training loop logs and the downstream scoring jobs report."""
import jax
import numpy as np

from headless_jax.objectives import bits_per_byte


def mean_metrics(metrics_list: list[dict]) -> dict[str, float]:
    """Means over steps or batches weighted by their predictions (num_predictions itself is summed)."""
    stacked = {k: np.array([float(m[k]) for m in metrics_list]) for k in metrics_list[0]}
    weights = stacked.get("num_predictions", np.ones(len(metrics_list)))
    weights = weights / max(weights.sum(), 1e-9)
    return {k: float(v.sum() if k == "num_predictions" else (v * weights).sum()) for k, v in stacked.items()}


def with_bits_per_byte(metrics: dict[str, float]) -> dict[str, float]:
    bpb = bits_per_byte(metrics)
    return metrics if bpb is None else dict(metrics, bits_per_byte=bpb)


def evaluate(eval_step, params, batches_by_source: dict[str, list[dict]]) -> dict[str, float]:
    """Held-out metrics over all sources' batches, and per source as `<name>/<metric>` when there are several."""
    per_source = {name: jax.device_get([eval_step(params, batch) for batch in batches])
                  for name, batches in batches_by_source.items()}
    results = with_bits_per_byte(mean_metrics([m for metrics in per_source.values() for m in metrics]))
    if len(per_source) > 1:
        for name, metrics in per_source.items():
            results.update({f"{name}/{k}": v for k, v in with_bits_per_byte(mean_metrics(metrics)).items()})
    return results
