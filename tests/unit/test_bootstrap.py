"""Bootstrap metrics: a resample's metric equals the evaluation's metric on the rows repeated by its
counts, and the resamples are the same for everyone who asks with the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from training import bootstrap
from training.evaluation import classifier_metrics, value_metrics

RNG = np.random.default_rng(7)
CUSTOMERS = 300
LABELS = (RNG.random(CUSTOMERS) < 0.3).astype(float)
# ties on purpose: rounded scores
PROBABILITIES = np.round(np.clip(0.3 * LABELS + 0.7 * RNG.random(CUSTOMERS), 0, 1), 2)
REVENUE = np.where(RNG.random(CUSTOMERS) < 0.4, RNG.gamma(2.0, 30.0, CUSTOMERS), 0.0)
PREDICTED_REVENUE = np.round(0.5 * REVENUE + RNG.gamma(1.0, 10.0, CUSTOMERS), 0)


def _counts() -> np.ndarray:
    return next(bootstrap.resample_counts(CUSTOMERS, resamples=3, seed=1))


@pytest.mark.parametrize("key", list(bootstrap.CLASSIFIER_METRICS))
def test_classifier_metric_of_a_resample_is_the_metric_of_the_repeated_rows(key: str) -> None:
    metric, _ = bootstrap.CLASSIFIER_METRICS[key]
    counts = _counts()
    values = metric(LABELS, PROBABILITIES, counts)
    for row, value in zip(counts.astype(int), values, strict=True):
        repeated = classifier_metrics(np.repeat(LABELS, row), np.repeat(PROBABILITIES, row))
        assert value == pytest.approx(repeated[key], rel=1e-9)


@pytest.mark.parametrize("key", list(bootstrap.VALUE_METRICS))
def test_value_metric_of_a_resample_is_the_metric_of_the_repeated_rows(key: str) -> None:
    metric, _ = bootstrap.VALUE_METRICS[key]
    counts = _counts()
    values = metric(REVENUE, PREDICTED_REVENUE, counts)
    for row, value in zip(counts.astype(int), values, strict=True):
        repeated = value_metrics(np.repeat(REVENUE, row), np.repeat(PREDICTED_REVENUE, row))
        assert value == pytest.approx(repeated[key], rel=1e-9)


def test_counts_of_one_give_the_evaluation_value() -> None:
    ones = np.ones((1, CUSTOMERS))
    assert bootstrap.auc(LABELS, PROBABILITIES, ones)[0] == pytest.approx(
        classifier_metrics(LABELS, PROBABILITIES)["test_auc"]
    )


def test_the_same_seed_draws_the_same_resamples_and_each_draws_every_customer_once_on_average() -> None:
    first = np.concatenate(list(bootstrap.resample_counts(CUSTOMERS, resamples=250, seed=3)))
    again = np.concatenate(list(bootstrap.resample_counts(CUSTOMERS, resamples=250, seed=3)))
    assert first.shape == (250, CUSTOMERS)
    assert (first == again).all()
    assert (first.sum(axis=1) == CUSTOMERS).all()


def test_interval_covers_the_middle_95_percent_and_ignores_undefined_resamples() -> None:
    values = np.r_[np.arange(1000, dtype=float), np.nan]
    low, high = bootstrap.interval(values)
    assert low == pytest.approx(24.975) and high == pytest.approx(974.025)


def test_calibration_error_with_counts_of_one_is_the_evaluations_and_a_resample_reweights_its_bins() -> None:
    ones = np.ones((1, CUSTOMERS))
    assert bootstrap.calibration_error(LABELS, PROBABILITIES, ones)[0] == pytest.approx(
        classifier_metrics(LABELS, PROBABILITIES)["test_calibration_error"], rel=1e-12
    )
    resampled = bootstrap.calibration_error(LABELS, PROBABILITIES, _counts())
    assert resampled.shape == (3,) and ((resampled >= 0) & (resampled <= 1)).all()


def test_every_predictor_and_metric_is_measured_on_the_same_resamples_drawn_once() -> None:
    metrics = {"test_auc": bootstrap.auc, "test_log_loss": bootstrap.log_loss}
    other = np.round(np.clip(PROBABILITIES + 0.1 * RNG.normal(size=CUSTOMERS), 0, 1), 2)

    values = bootstrap.bootstrap(metrics, LABELS, {"model": PROBABILITIES, "baseline": other, "same": PROBABILITIES},
                                 resamples=250, seed=3)  # fmt: skip

    counts = np.concatenate(list(bootstrap.resample_counts(CUSTOMERS, resamples=250, seed=3)))
    for name, predicted in {"model": PROBABILITIES, "baseline": other}.items():
        for key, metric in metrics.items():
            assert values[name][key] == pytest.approx(metric(LABELS, predicted, counts), rel=1e-12)
    # paired: the same predictions under two names differ by nothing on any resample
    assert (values["model"]["test_auc"] - values["same"]["test_auc"] == 0).all()
    again = bootstrap.bootstrap(metrics, LABELS, {"model": PROBABILITIES}, resamples=250, seed=3)
    assert (again["model"]["test_auc"] == values["model"]["test_auc"]).all()
