"""CLV's P10-P90 range on tiny data: the table made of held-out rows, the lookup between its bins,
NULL from a bundle saved before ranges, both kinds of bundle answering it, the Scorer rounding it
like predicted_clv, and the range of a sum of customers (not the sum of their P10s); a segment's
predicted revenue with that range is in test_kpis."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from custlens.settings import ServingSettings
from features.catalog import BTYD_SUMMARY_FEATURES
from features.kpis.answer import Z_90, total_range
from serving.scorer import Scorer
from tests.unit.test_score_currency import NOW, features, scorer
from training.baselines.servable import BaselineBundle
from training.packaging import ModelBundle
from training.value_range import MIN_BIN_ROWS, P10, P90, RANGE_KEY, VARIANCE, ValueRange, coverage_metrics, with_range


def table() -> ValueRange:
    """Two bins: predictions near 100 whose actual values run 0..200, near 1000 with 500..1500."""
    predicted = np.r_[np.full(100, 100.0), np.full(100, 1000.0)]
    actual = np.r_[np.linspace(0, 200, 100), np.linspace(500, 1500, 100)]
    made = ValueRange.fit(predicted, actual, "validation 2025-01-01")
    assert made is not None
    return made


def test_each_bin_holds_the_10th_and_90th_percentile_of_its_actual_values() -> None:
    made = table()
    assert made.predicted == (100.0, 1000.0)
    assert made.p10 == pytest.approx((20.0, 600.0)) and made.p90 == pytest.approx((180.0, 1400.0))
    assert made.mean == pytest.approx((100.0, 1000.0)) and made.rows == 200


def test_a_prediction_between_bins_gets_a_range_interpolated_between_them() -> None:
    looked = table().lookup(np.array([100.0, 550.0, 1000.0, 5.0, 2000.0, np.nan]))
    assert looked[P10][:4] == pytest.approx([20.0, 310.0, 600.0, 20.0])  # below the first bin: the first's
    assert looked[P90][:4] == pytest.approx([180.0, 790.0, 1400.0, 180.0])
    assert np.isnan(looked[P10][5]) and np.isnan(looked[P90][5]) and np.isnan(looked[VARIANCE][5])
    # twice the top bin's median: twice its P10 and P90, four times its variance
    assert (looked[P10][4], looked[P90][4]) == pytest.approx((1200.0, 2800.0))
    assert looked[VARIANCE][4] == pytest.approx(4 * table().variance[1])


def test_too_few_held_out_rows_make_no_range() -> None:
    assert ValueRange.fit(np.ones(MIN_BIN_ROWS - 1), np.ones(MIN_BIN_ROWS - 1)) is None


def test_rows_with_the_same_prediction_stay_in_one_bin() -> None:
    # 150 customers predicted exactly 0 (never bought) and 150 spread out: 0s are never split
    predicted = np.r_[np.zeros(150), np.linspace(1, 100, 150)]
    made = ValueRange.fit(predicted, predicted)
    assert made is not None and made.predicted[0] == 0.0 and made.predicted[1] > 0.0


def test_the_range_survives_the_bundles_json() -> None:
    made = table()
    assert ValueRange.from_dict(made.to_dict()) == made


def test_a_zero_heavy_bin_can_leave_the_mean_outside_its_range_but_p10_stays_at_or_below_p90() -> None:
    # 92 of 100 customers buy nothing, 8 buy 1000: the predicted mean 80 is above P10 = P90 = 0
    predicted, actual = np.full(100, 80.0), np.r_[np.zeros(92), np.full(8, 1000.0)]
    made = ValueRange.fit(predicted, actual)
    assert made is not None
    looked = made.lookup(np.array([80.0]))
    assert looked[P10][0] == looked[P90][0] == 0.0 < 80.0


def test_a_bundle_saved_without_a_range_answers_the_value_alone() -> None:
    assert list(with_range(np.array([5.0]), {})) == ["predicted_value"]


def test_both_kinds_of_bundle_answer_the_range_they_hold(tmp_path: Any) -> None:
    # a learned CLV bundle (a constant tree) and a baseline, each with the table in its meta
    x = pd.DataFrame({"spend": np.arange(60, dtype=float)})
    booster = lgb.train({"objective": "regression", "verbosity": -1, "min_data_in_leaf": 100}, lgb.Dataset(x,
                        np.full(60, 550.0)), num_boost_round=1)  # fmt: skip
    learned = ModelBundle("clv", booster, ["spend"], {}, meta={RANGE_KEY: table().to_dict()})
    loaded = ModelBundle.load(learned.save(tmp_path))
    scores = loaded.scores(loaded.encode({"spend": np.array([1.0])}))
    assert scores[P10] == pytest.approx([310.0]) and scores[P90] == pytest.approx([790.0])
    baseline = BaselineBundle("clv", "bgnbd_gamma_gamma", {"r": 1.0, "alpha": 1.0, "a": 0.5, "b": 1.0, "p": 2.0,
                              "q": 3.0, "v": 10.0}, 365, list(BTYD_SUMMARY_FEATURES))  # fmt: skip
    matrix = np.array([[3.0, 100.0, 200.0, 50.0]])
    assert P10 not in baseline.scores(matrix)  # fitted before ranges: the value alone
    ranged = BaselineBundle.from_state({**baseline.state(), "meta": {RANGE_KEY: table().to_dict()}})
    value = ranged.scores(matrix)
    assert value[P10] == pytest.approx(table().lookup(value["predicted_value"])[P10])
    assert ranged.fit_digest() != baseline.fit_digest()  # another range is another version to serve


class Ranged:
    """The stand-in CLV model of test_score_currency, with a P10-P90 range and a variance."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def scores(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        out = self.base.scores(matrix)
        value = out["predicted_value"]
        return {**out, P10: value * 0.0 + 0.4, P90: value * 2.0 + 0.004, VARIANCE: value**2}


def test_the_scorer_rounds_the_range_to_the_currencys_minor_units_and_old_versions_serve_null() -> None:
    served = scorer("VND")
    old = served.score(features([True, True]), NOW, clv_variance=True)
    assert old["predicted_clv_p10"].isna().all() and old["predicted_clv_p90"].isna().all()
    assert old["predicted_clv_variance"].isna().all() and old["predicted_clv"].notna().all()
    ranged = Scorer(served.churn, served.repurchase, Ranged(served.clv), served.segments, served.refs,
                    ServingSettings(), "VND")  # type: ignore[arg-type]
    scored = ranged.score(features([True, True, False]), NOW)
    assert scored["predicted_clv_p10"].tolist()[:2] == [0.0, 0.0]
    assert scored["predicted_clv_p90"].tolist()[:2] == [2_469_136.0, 75.0]
    assert np.isnan(scored["predicted_clv_p90"].iloc[2])  # unknown customer: no range either
    assert "predicted_clv_variance" not in scored  # only when asked: it is not an output


def test_coverage_counts_the_rows_inside_and_each_tail() -> None:
    actual = np.array([0.0, 0.0, 5.0, 50.0, -1.0])
    metrics = coverage_metrics(actual, np.zeros(5), np.full(5, 10.0), actual > 0)
    assert metrics["test_interval_coverage"] == pytest.approx(0.6)
    assert metrics["test_interval_coverage_buyers"] == pytest.approx(0.5)
    assert metrics["test_interval_coverage_non_buyers"] == pytest.approx(2 / 3)
    assert (metrics["test_interval_below_p10"], metrics["test_interval_above_p90"]) == (0.2, 0.2)
    assert metrics["test_interval_mean_width"] == 10.0


def test_a_totals_range_is_normal_around_the_sum_not_the_sum_of_the_customers_p10s() -> None:
    # 100 customers each 0 or 1000 at even odds: each P10 is 0, P90 1000; the total of 100 is 50,000
    # with sd 5,000, so its P10-P90 is 50,000 -/+ 6,408 rather than 0..100,000
    low, high = total_range(50_000.0, 100 * 500.0**2)
    assert (low, high) == pytest.approx((50_000 - Z_90 * 5_000, 50_000 + Z_90 * 5_000))


def test_a_small_groups_range_does_not_go_below_no_revenue() -> None:
    # two customers predicted 0.12 each, with a wide spread: the normal P10 would be negative revenue
    low, high = total_range(0.24, 2 * 15.0**2)
    assert low == 0.0 and high == pytest.approx(0.24 + Z_90 * 15.0 * 2**0.5)
