"""Task metrics in plain NumPy (float64): accuracy, binary F1, Matthews correlation, Pearson, Spearman.

Each takes predictions and gold labels of the same length. A degenerate case (no variance, no positive) gives 0,
as scikit-learn and the GLUE scorer do, rather than NaN.
"""
import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def _binary_counts(predictions, labels) -> tuple[int, int, int, int]:
    p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
    return int(np.sum(p & y)), int(np.sum(p & ~y)), int(np.sum(~p & y)), int(np.sum(~p & ~y))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1): 2·TP / (2·TP + FP + FN)."""
    tp, fp, fn, _ = _binary_counts(predictions, labels)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """(TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) for binary labels."""
    tp, fp, fn, tn = _binary_counts(predictions, labels)
    denominator = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    x = np.asarray(predictions, np.float64) - np.mean(predictions)
    y = np.asarray(labels, np.float64) - np.mean(labels)
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks where tied values share the mean of the ranks they span (e.g. [5, 1, 5] → [2.5, 1, 2.5])."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Runs of equal values: each run's members get the mean of the positions it covers.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], len(values)]
    mean_rank_per_run = (run_starts + run_ends + 1) / 2.0  # mean of the 1-based ranks start+1 … end
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat(mean_rank_per_run, run_ends - run_starts)
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation of the average ranks."""
    return pearson(average_ranks(predictions), average_ranks(labels))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": matthews_corrcoef, "pearson": pearson, "spearman": spearman}


def compute(names: tuple[str, ...], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{name: value} for the named metrics (keys of METRICS)."""
    return {name: METRICS[name](predictions, labels) for name in names}
