"""Task metrics against hand-computed examples (and SciPy for the rank correlation with ties)."""
import numpy as np
import pytest

from headless_jax.downstream import metrics

# preds vs labels: TP = 2 (rows 0, 4), FP = 1 (row 1), FN = 1 (row 3), TN = 1 (row 2)
PREDS, LABELS = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])


def test_accuracy():
    assert metrics.accuracy(PREDS, LABELS) == pytest.approx(3 / 5)
    assert metrics.accuracy(np.array([2, 0, 1]), np.array([2, 1, 1])) == pytest.approx(2 / 3)


def test_f1_of_the_positive_class():
    assert metrics.f1(PREDS, LABELS) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2/3
    assert metrics.f1(np.zeros(4), np.array([0, 1, 0, 1])) == 0.0  # no true positive


def test_matthews_correlation():
    # (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 − 1) / sqrt(3·3·2·2) = 1/6
    assert metrics.matthews_corrcoef(PREDS, LABELS) == pytest.approx(1 / 6)
    assert metrics.matthews_corrcoef(LABELS, LABELS) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef(1 - LABELS, LABELS) == pytest.approx(-1.0)
    assert metrics.matthews_corrcoef(np.ones(5), LABELS) == 0.0  # constant predictions: 0, not NaN


def test_pearson():
    # x − x̄ = [−1, 0, 1], y − ȳ = [−2/3, 1/3, 1/3]: Σxy = 1, Σx² = 2, Σy² = 2/3 → r = 1/sqrt(4/3)
    assert metrics.pearson(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 2.0])) == pytest.approx(np.sqrt(3) / 2)
    assert metrics.pearson(np.ones(3), np.array([1.0, 2.0, 3.0])) == 0.0


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(metrics.average_ranks(np.array([5, 1, 5])), [2.5, 1, 2.5])
    np.testing.assert_array_equal(metrics.average_ranks(np.array([3.0, 3.0, 3.0])), [2, 2, 2])
    np.testing.assert_array_equal(metrics.average_ranks(np.array([0.3, 0.1, 0.2, 0.1])), [4, 1.5, 3, 1.5])


def test_spearman_with_ties():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: Σxy = 4.5, Σx² = 4.5, Σy² = 5 → 4.5 / sqrt(22.5) = sqrt(0.9)
    got = metrics.spearman(np.array([10.0, 20.0, 20.0, 40.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert got == pytest.approx(np.sqrt(0.9))


def test_spearman_matches_scipy_on_many_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 200).astype(float), rng.integers(0, 4, 200) + 0.1 * rng.integers(0, 6, 200)
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_compute_names_metrics():
    assert metrics.compute(("f1", "accuracy"), PREDS, LABELS) == pytest.approx({"f1": 2 / 3, "accuracy": 3 / 5})
