"""The naive path the gate benchmark compares training.bootstrap with: the gate as it first was,
each (predictor, metric) bootstrapped on its own, drawing the multinomial counts again every time
(the same seed, so still paired, at the cost of one draw per predictor and metric), with the
metrics reweighting a sorted copy of the counts through `np.add.reduceat`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
_BLOCK_COUNTS = 10_000_000


def resample_counts(customers: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    uniform = np.full(customers, 1.0 / customers)
    block = max(1, min(100, _BLOCK_COUNTS // max(customers, 1)))
    for start in range(0, resamples, block):
        yield rng.multinomial(customers, uniform, size=min(block, resamples - start)).astype("float64")


def bootstrap(metric: WeightedMetric, actual: np.ndarray, predicted: np.ndarray, resamples: int,
              seed: int) -> np.ndarray:  # fmt: skip
    blocks = [metric(actual, predicted, counts) for counts in resample_counts(len(actual), resamples, seed)]
    return np.concatenate(blocks)


def _probabilities(predicted: np.ndarray) -> np.ndarray:
    return np.clip(predicted, 1e-6, 1 - 1e-6)


def _tie_groups(scores: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])


def _mean(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return (counts * values).sum(axis=1) / counts.sum(axis=1)


def auc(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    p = _probabilities(predicted)
    order = np.argsort(p, kind="stable")
    starts = _tie_groups(p[order])
    weights, y = counts[:, order], actual[order]
    positives = np.add.reduceat(weights * y, starts, axis=1)
    negatives = np.add.reduceat(weights * (1 - y), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        return (positives * (below + 0.5 * negatives)).sum(axis=1) / (positives.sum(axis=1) * negatives.sum(axis=1))


def log_loss(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    p = _probabilities(predicted)
    return _mean(-(actual * np.log(p) + (1 - actual) * np.log(1 - p)), counts)


def calibration_error(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray, bins: int = 10) -> np.ndarray:
    p = _probabilities(predicted)
    order = np.argsort(p, kind="stable")
    starts = np.array([part[0] for part in np.array_split(np.arange(len(p)), bins) if len(part)])
    weights = counts[:, order]
    labels = np.add.reduceat(weights * actual[order], starts, axis=1)
    predictions = np.add.reduceat(weights * p[order], starts, axis=1)
    return np.abs(labels - predictions).sum(axis=1) / weights.sum(axis=1)


def normalized_gini(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    def gini(by: np.ndarray) -> np.ndarray:
        order = np.argsort(-by, kind="stable")
        value, weights = actual[order], counts[:, order]
        revenue = weights * value
        before = np.cumsum(revenue, axis=1) - revenue
        cumulative = (weights * before + value * weights * (weights + 1) / 2).sum(axis=1)
        rows = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = np.where(revenue.sum(axis=1) > 0, revenue.sum(axis=1), np.nan)
            return cumulative / total / rows - (rows + 1) / (2 * rows)

    with np.errstate(invalid="ignore", divide="ignore"):
        return gini(predicted) / gini(actual)


def mae(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return _mean(np.abs(actual - predicted), counts)


def total_ratio(actual: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        actual_total = (counts * actual).sum(axis=1)
        return (counts * predicted).sum(axis=1) / np.where(actual_total > 0, actual_total, np.nan)


# What the gate bootstraps, by key: the primary metric and the guards of each kind of model.
METRICS: dict[str, WeightedMetric] = {
    "test_auc": auc,
    "test_log_loss": log_loss,
    "test_calibration_error": calibration_error,
    "test_normalized_gini": normalized_gini,
    "test_mae": mae,
    "test_total_ratio": total_ratio,
}


def gate_draws(metrics: list[str], actual: np.ndarray, predictions: dict[str, np.ndarray], resamples: int,
               seed: int) -> dict[str, dict[str, np.ndarray]]:  # fmt: skip
    """Every (predictor, metric) the gate needs, each bootstrapped on its own."""
    return {name: {key: bootstrap(METRICS[key], actual, predicted, resamples, seed) for key in metrics}
            for name, predicted in predictions.items()}  # fmt: skip
