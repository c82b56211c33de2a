"""Bootstrap intervals over customers: every metric of a backtest recomputed on resamples of the
holdout's customers, drawn once from a seed and shared by every candidate, so the difference of
two candidates is measured on the same resample each time (a paired interval).

A resample is a vector of counts (how often each customer was drawn), and each metric here is the
metric of `training.evaluation` on the rows repeated by those counts, computed for a block of
resamples at once with numpy (with counts of 1 each it is exactly the evaluation's value).
Measured: 1,000 resamples of 2,357 customers (CDNOW) take 0.22 s for the AUC here, 1.9 s with
sklearn's roc_auc_score on each resample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
_BLOCK_COUNTS = 10_000_000  # counts per block of resamples (80 MB of float64, a few copies per metric)

# (actual, predicted, counts of shape (resamples, customers)) -> one value per resample
WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def resample_counts(customers: int, resamples: int = RESAMPLES, seed: int = 0) -> Iterator[np.ndarray]:
    """Blocks of bootstrap counts; the same seed gives the same blocks, whoever asks."""
    rng = np.random.default_rng(seed)
    uniform = np.full(customers, 1.0 / customers)
    block = max(1, min(100, _BLOCK_COUNTS // max(customers, 1)))
    for start in range(0, resamples, block):
        yield rng.multinomial(customers, uniform, size=min(block, resamples - start)).astype("float64")


def bootstrap(metric: WeightedMetric, actual: np.ndarray, predicted: np.ndarray, resamples: int = RESAMPLES,
              seed: int = 0) -> np.ndarray:  # fmt: skip
    """The metric on each resample of the customers (NaN where a resample leaves it undefined)."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    blocks = [metric(actual, predicted, counts) for counts in resample_counts(len(actual), resamples, seed)]
    return np.concatenate(blocks)


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap values (NaN when no resample has a value)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _probabilities(predicted: np.ndarray) -> np.ndarray:
    return np.clip(predicted, 1e-6, 1 - 1e-6)  # as classifier_metrics scores them


def _tie_groups(scores: np.ndarray) -> np.ndarray:
    """Start of each run of equal values in sorted `scores`."""
    return np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])


def auc(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC: the chance a positive outranks a negative, ties counting one half."""
    p = _probabilities(predicted)
    order = np.argsort(p, kind="stable")
    starts = _tie_groups(p[order])
    weights, y = counts[:, order], actual[order]
    positives = np.add.reduceat(weights * y, starts, axis=1)
    negatives = np.add.reduceat(weights * (1 - y), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        return (positives * (below + 0.5 * negatives)).sum(axis=1) / (positives.sum(axis=1) * negatives.sum(axis=1))


def pr_auc(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's): precision at each threshold weighted by the recall it adds."""
    p = _probabilities(predicted)
    order = np.argsort(-p, kind="stable")
    starts = _tie_groups(p[order])
    weights, y = counts[:, order], actual[order]
    positives = np.add.reduceat(weights * y, starts, axis=1)
    flagged = np.cumsum(np.add.reduceat(weights, starts, axis=1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged > 0, np.cumsum(positives, axis=1) / flagged, 0.0)  # 0: no row drawn yet
        return (positives * precision).sum(axis=1) / positives.sum(axis=1)


def _mean(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return (counts * values).sum(axis=1) / counts.sum(axis=1)


def brier(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return _mean((_probabilities(predicted) - actual) ** 2, counts)


def log_loss(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    p = _probabilities(predicted)
    return _mean(-(actual * np.log(p) + (1 - actual) * np.log(1 - p)), counts)


def calibration_error(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray, bins: int = 10) -> np.ndarray:
    """Expected calibration error (training.evaluation's): |labels - predictions| summed within each of
    `bins` equal-count bins of the prediction, over the rows. The bins are those of the whole sample;
    a resample reweights their rows."""
    p = _probabilities(predicted)
    order = np.argsort(p, kind="stable")
    starts = np.array([part[0] for part in np.array_split(np.arange(len(p)), bins) if len(part)])
    weights = counts[:, order]
    labels = np.add.reduceat(weights * actual[order], starts, axis=1)
    predictions = np.add.reduceat(weights * p[order], starts, axis=1)
    return np.abs(labels - predictions).sum(axis=1) / weights.sum(axis=1)


def normalized_gini(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Gini of the revenue ranking by prediction over that of the perfect ranking; a customer drawn
    c times is c adjacent rows of the ranking."""

    def gini(by: np.ndarray) -> np.ndarray:
        order = np.argsort(-by, kind="stable")
        value, weights = actual[order], counts[:, order]
        revenue = weights * value
        before = np.cumsum(revenue, axis=1) - revenue
        # the c copies of a row add before + value, before + 2 value, ..., before + c value
        cumulative = (weights * before + value * weights * (weights + 1) / 2).sum(axis=1)
        rows = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.where(revenue.sum(axis=1) > 0, revenue.sum(axis=1), np.nan)
            return cumulative / total / rows - (rows + 1) / (2 * rows)

    with np.errstate(invalid="ignore", divide="ignore"):
        return gini(predicted) / gini(actual)


def mae(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return _mean(np.abs(actual - predicted), counts)


def rmse(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.sqrt(_mean((actual - predicted) ** 2, counts))


def total_ratio(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Total predicted over total actual (1 is right on the total)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        actual_total = (counts * actual).sum(axis=1)
        return (counts * predicted).sum(axis=1) / np.where(actual_total > 0, actual_total, np.nan)


# The metrics a backtest gives intervals for, by the key training logs them under, and whether
# larger is better (total_ratio: neither, 1 is best; it is reported, never ranked).
CLASSIFIER_METRICS: dict[str, tuple[WeightedMetric, bool]] = {
    "test_auc": (auc, True),
    "test_pr_auc": (pr_auc, True),
    "test_brier": (brier, False),
    "test_log_loss": (log_loss, False),
}
VALUE_METRICS: dict[str, tuple[WeightedMetric, bool]] = {
    "test_normalized_gini": (normalized_gini, True),
    "test_mae": (mae, False),
    "test_rmse": (rmse, False),
    "test_total_ratio": (total_ratio, False),
}
