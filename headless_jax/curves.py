"""The curves of training runs, read from their workdirs, and a figure of them (`python -m headless_jax.plot`).

A run's `metrics.jsonl` gives the curves (one panel per metric, one line per run). Against `tokens` or `flops`
the x of a step is the sum over the steps up to it of the tokens (batch × sequence length) or training FLOPs
(`train/flops.py`) of the config each was trained with, as the run's `config_history.jsonl` records it, so that
runs of different cost meet at equal compute.
"""
import io
import json

import matplotlib
import numpy as np
from absl import app
from etils import epath

from headless_jax.config import saved_config
from headless_jax.train.flops import train_flops_between

matplotlib.use("Agg")  # files only: no display needed
from matplotlib import pyplot  # noqa: E402 — after choosing the backend

X_AXES = ("step", "tokens", "flops")
Curves = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # metric → run label → (x, y)


class NotARunError(app.UsageError):
    pass


def read_run(run: str) -> tuple[list[dict], list[dict]]:
    """(metrics.jsonl rows, config_history.jsonl entries) of a run directory; NotARunError if it is not one."""
    path = epath.Path(run)
    metrics, history = path / "metrics.jsonl", path / "config_history.jsonl"
    if not path.is_dir():
        raise NotARunError(f"{run} is not a directory: give the --workdir of training runs")
    missing = [file.name for file in (metrics, history) if not file.exists()]
    if missing:
        raise NotARunError(f"{run} is not a training run: it has no {' or '.join(missing)} (give the --workdir of a "
                           "run of python -m headless_jax.main trained with the jsonl tracker, the default)")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    return rows, entries


def cost_between(entry: dict, x: str, start, end):
    """What the steps start … end-1 of the config of `entry` (a config_history.jsonl line) add along the x axis
    `x` (start and end may be arrays)."""
    if x == "step":
        return end - start
    config = saved_config(entry["config"])
    if x == "tokens":
        return (end - start) * float(config.train.global_batch_size * config.data.seq_len)
    return train_flops_between(config, start, end)


def x_of_steps(history: list[dict], steps: np.ndarray, x: str) -> np.ndarray:
    """The x of each step: Σ over the steps up to it of their config's cost. A session that resumed from a
    checkpoint at step s trained the steps after s with its own config, replacing what earlier sessions did there."""
    starts, sessions = [], []
    for entry in history:
        kept = [i for i, start in enumerate(starts) if start < entry["start_step"]]
        starts, sessions = [starts[i] for i in kept] + [entry["start_step"]], [sessions[i] for i in kept] + [entry]
    ends = starts[1:] + [np.inf]
    steps = np.asarray(steps, np.float64)
    return sum(cost_between(entry, x, start, np.clip(steps, start, end))
               for start, end, entry in zip(starts, ends, sessions))


def curves(runs: list[str], metrics: list[str], x: str = "step") -> Curves:
    """metric → run label → (x, y), for the metrics some run logged; NotARunError for a run that is not one or a
    metric no run has."""
    data = {run: read_run(run) for run in runs}
    labels = _labels(runs)
    found: Curves = {}
    for metric in metrics:
        split, _, name = metric.partition("/")
        for run, (rows, history) in data.items():
            points = [(row["step"], np.nan if row[name] is None else row[name])
                      for row in rows if row["split"] == split and name in row]
            if points:
                steps, values = np.array(points, dtype=np.float64).T
                found.setdefault(metric, {})[labels[run]] = (x_of_steps(history, steps, x), values)
        if metric not in found:
            available = sorted({f"{row['split']}/{key}" for rows, _ in data.values() for row in rows
                                for key in row if key not in ("step", "split")})
            raise NotARunError(f"no run logged {metric!r}; --metrics takes SPLIT/METRIC names such as "
                               f"{', '.join(available[:12])}")
    return found


def draw(found: Curves, x: str, out: str) -> None:
    figure, axes = pyplot.subplots(1, len(found), figsize=(5 * len(found), 4), squeeze=False)
    for axis, (metric, lines) in zip(axes[0], found.items()):
        for label, (xs, ys) in lines.items():
            axis.plot(xs, ys, label=label, marker="o" if len(xs) <= 30 else None, markersize=3)
        axis.set(title=metric, xlabel={"step": "step", "tokens": "tokens", "flops": "training FLOPs"}[x])
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    pyplot.close(figure)
    epath.Path(out).write_bytes(png.getvalue())


def _labels(runs: list[str]) -> dict[str, str]:
    """Each run's directory name, or its whole path where two share a name."""
    names = [epath.Path(run).name for run in runs]
    return {run: name if names.count(name) == 1 else run for run, name in zip(runs, names)}
