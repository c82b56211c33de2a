"""The backtest on tiny hand-made holdouts: intervals and paired differences behave as they must
(a copy of the best baseline differs by exactly 0, a perfect model beats it), the JSON has the
documented shape, labels are training's with the horizon as window, and a horizon past the data
end or spelled wrong is one clear error."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from custlens.cli import app
from custlens.errors import CustlensError
from custlens.settings import Settings
from tests.unit.test_labels import write_orders
from training.backtest import Candidate, Holdout, evaluate, horizon_settings, load_holdout, training_windows

CUTOFF = date(2025, 1, 1)
CUSTOMERS = 400


def _holdout() -> Holdout:
    rng = np.random.default_rng(3)
    bought = rng.random(CUSTOMERS) < 0.35
    revenue = np.where(bought, rng.gamma(2.0, 40.0, CUSTOMERS), 0.0)
    labels = pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(CUSTOMERS)],
            "cutoff": pd.Timestamp(CUTOFF, tz="UTC"),
            "active": np.arange(CUSTOMERS) % 4 != 0,  # a quarter not active: no churn label
            "repurchased": bought,
            "revenue_next": revenue,
        }
    )
    labels["churned"] = pd.array(np.where(labels["active"], ~bought, pd.NA), dtype="boolean")
    return Holdout(CUTOFF, 90, labels)


def _candidates(holdout: Holdout) -> list[Candidate]:
    rng = np.random.default_rng(4)
    candidates = []
    for model in ("churn", "repurchase", "clv"):
        actual = holdout.actual(model)  # type: ignore[arg-type]
        noisy = np.clip(0.4 * actual / max(actual.max(), 1) + 0.6 * rng.random(len(actual)), 0, 1)
        worse = rng.random(len(actual))
        candidates += [
            Candidate(model, "noisy", "baseline", noisy, ""),  # type: ignore[arg-type]
            Candidate(model, "random", "baseline", worse, ""),  # type: ignore[arg-type]
            Candidate(model, "copy_of_noisy", "learned", noisy.copy(), ""),  # type: ignore[arg-type]
            Candidate(model, "perfect", "learned", actual / max(actual.max(), 1), ""),  # type: ignore[arg-type]
            Candidate(model, "untrainable", "learned", None, "no training rows fit"),  # type: ignore[arg-type]
        ]
    return candidates


@pytest.fixture(scope="module")
def result() -> dict:
    holdout = _holdout()
    return evaluate(holdout, _candidates(holdout), resamples=200, seed=1).to_dict()


def _row(result: dict, model: str, candidate: str, metric: str) -> dict:
    (row,) = [r for r in result["rows"] if (r["model"], r["candidate"], r["metric"]) == (model, candidate, metric)]
    return row


def test_json_has_the_documented_shape(result: dict) -> None:
    assert json.loads(json.dumps(result)) == result  # plain JSON: no NaN, no numpy types
    assert {"cutoff", "horizon_days", "rows"} <= set(result)
    assert result["cutoff"] == "2025-01-01" and result["horizon_days"] == 90
    for row in result["rows"]:
        assert {"model", "candidate", "kind", "metric", "value", "ci_low", "ci_high"} <= set(row)
        assert row["model"] in {"churn", "repurchase", "clv"} and row["kind"] in {"learned", "baseline"}
        assert row["ci_low"] - 1e-9 <= row["value"] <= row["ci_high"] + 1e-9
        if row["kind"] == "learned":
            assert set(row["diff_vs_best_baseline"]) == {"value", "ci_low", "ci_high"}
        else:
            assert "diff_vs_best_baseline" not in row
    metrics = {(r["model"], r["metric"]) for r in result["rows"]}
    assert {("churn", "auc"), ("repurchase", "pr_auc"), ("clv", "normalized_gini"), ("clv", "mae")} <= metrics


def test_the_best_baseline_is_chosen_by_the_primary_metric(result: dict) -> None:
    assert result["best_baselines"] == {"churn": "noisy", "repurchase": "noisy", "clv": "noisy"}


def test_a_copy_of_the_best_baseline_differs_from_it_by_exactly_zero_on_every_resample(result: dict) -> None:
    for model, metric in (("churn", "auc"), ("repurchase", "brier"), ("clv", "normalized_gini")):
        assert _row(result, model, "copy_of_noisy", metric)["diff_vs_best_baseline"] == {
            "value": 0.0, "ci_low": 0.0, "ci_high": 0.0,
        }  # fmt: skip


def test_a_perfect_model_beats_the_best_baseline_with_an_interval_above_zero(result: dict) -> None:
    for model, metric in (("churn", "auc"), ("repurchase", "auc"), ("clv", "normalized_gini")):
        row = _row(result, model, "perfect", metric)
        assert row["value"] == pytest.approx(1.0)
        assert row["diff_vs_best_baseline"]["ci_low"] > 0


def test_churn_is_measured_on_active_customers_only_and_the_counts_are_reported(result: dict) -> None:
    assert result["populations"]["churn"]["customers"] == CUSTOMERS * 3 // 4
    assert result["populations"]["repurchase"]["customers"] == CUSTOMERS
    population = result["populations"]["repurchase"]
    assert population["positives"] + population["negatives"] == CUSTOMERS


def test_a_model_that_cannot_be_trained_has_no_rows_and_says_why(result: dict) -> None:
    assert not [r for r in result["rows"] if r["candidate"] == "untrainable"]
    notes = [c for c in result["candidates"] if c["candidate"] == "untrainable"]
    assert all(not c["evaluated"] and c["note"] == "no training rows fit" for c in notes)


def test_horizon_settings_set_every_label_window(settings: Settings) -> None:
    windows = horizon_settings(settings, 273).training
    assert (windows.churn_window_days, windows.repurchase_window_days, windows.clv_window_days) == (273, 273, 273)


def _orders(settings: Settings) -> None:
    write_orders(
        settings,
        [
            ("A", "2024-06-03 10:00", "completed", "10"),
            ("A", "2025-01-20 10:00", "completed", "30"),  # in the 30-day horizon
            ("A", "2025-02-10 10:00", "returned", "-5"),  # after it
            ("B", "2024-12-31 23:00", "completed", "20"),  # nothing after
            ("C", "2025-01-05 10:00", "completed", "15"),  # first order after the cutoff: not in the holdout
            ("D", "2023-06-01 10:00", "completed", "15"),  # not active in the 365 days before
            ("D", "2025-01-02 10:00", "completed", "25"),
            ("B", "2025-03-31 10:00", "completed", "1"),  # the data end
        ],
    )


def test_holdout_labels_are_trainings_with_the_horizon_as_window(settings: Settings) -> None:
    _orders(settings)
    labels = load_holdout(settings, CUTOFF, 30).labels.set_index("customer_id")
    assert sorted(labels.index) == ["A", "B", "D"]
    assert labels["repurchased"].to_dict() == {"A": True, "B": False, "D": True}
    assert labels["revenue_next"].to_dict() == {"A": 30.0, "B": 0.0, "D": 25.0}
    assert labels["churned"].dropna().to_dict() == {"A": False, "B": True}
    assert not labels.loc["D", "active"]  # no churn label: not active in the 365 days before


def test_a_horizon_past_the_data_end_names_the_longest_that_fits(settings: Settings) -> None:
    _orders(settings)
    with pytest.raises(CustlensError, match="the longest horizon from this cutoff is 90 days"):
        load_holdout(settings, CUTOFF, 91)


def test_training_windows_end_by_the_cutoff_and_are_at_most_the_horizon(settings: Settings) -> None:
    _orders(settings)
    holdout = Holdout(date(2025, 3, 1), 60, pd.DataFrame())
    windows = training_windows(settings, holdout)
    assert windows, "Mondays before the cutoff (the orders span less than two years: a weekly grid)"
    assert all(w.days == min(60, (holdout.cutoff - w.cutoff).days) >= 28 for w in windows)
    assert windows[-1].cutoff == date(2025, 1, 27) and windows[-1].days == 33  # the last Monday 28+ days before


def test_a_misspelled_horizon_is_one_line_that_says_what_is_accepted() -> None:
    result = CliRunner().invoke(app, ["backtest", "--cutoff", "1997-10-01", "--horizon", "39 weeks"])
    assert result.exit_code == 2
    assert "--horizon" in result.output and "39w" in result.output
    assert "Traceback" not in result.output
