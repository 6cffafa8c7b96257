"""Model selection on the dev split alone: which learning rate of a grid, and which epoch of each seed's run.

Every pretrained model gets the same grid and the same rule, so that no hand-picked rate decides a comparison:
each seed's run keeps its best epoch on dev; the rate whose seeds' best dev scores have the highest mean wins.
The splits that are reported (test) are never read by the choice: they are scored once, at the chosen point.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Choice:
    learning_rate: float
    epochs: tuple[int, ...]  # per seed, the chosen epoch (1-based)
    dev_scores: tuple[float, ...]  # per seed, the dev score there
    grid: dict[float, float]  # every rate → the mean over seeds of their best dev score


def best_epoch(dev_curve: list[float]) -> int:
    """The 1-based epoch of the highest dev score (the earliest of equal ones)."""
    return int(np.argmax(dev_curve)) + 1


def choose(dev_curves: dict[float, list[list[float]]]) -> Choice:
    """dev_curves[rate][seed][epoch - 1]: dev scores after every epoch of every run → the choice. Ties between
    rates go to the first in grid order."""
    if not dev_curves or any(not curves or not all(curves) for curves in dev_curves.values()):
        raise ValueError("selection needs at least one rate, seed and epoch of dev scores")
    grid = {rate: float(np.mean([max(curve) for curve in curves])) for rate, curves in dev_curves.items()}
    rate = max(grid, key=grid.get)  # max keeps the first of equal values
    epochs = tuple(best_epoch(curve) for curve in dev_curves[rate])
    return Choice(rate, epochs, tuple(curve[e - 1] for curve, e in zip(dev_curves[rate], epochs)), grid)


def parse_grid(spec: str, default: float) -> tuple[float, ...]:
    """'1e-4,3e-4,1e-3' → the rates (each > 0); an empty spec → (default,)."""
    try:
        rates = tuple(float(part) for part in spec.split(",") if part.strip()) or (default,)
    except ValueError:
        rates = ()
    if not rates or any(rate <= 0 for rate in rates):
        raise ValueError(f"learning_rates={spec!r}: give positive rates, comma-separated, e.g. "
                         "--config.learning_rates=1e-4,3e-4,1e-3")
    return rates
