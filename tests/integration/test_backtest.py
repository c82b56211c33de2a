"""The backtest end to end on a small generated lake, whose answer is known: the generator's truth
(training.oracle) is the ceiling every candidate is measured against, on the same customers, labels
and resamples. Run through the command line, so its JSON is what a user gets."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from custlens.cli import app
from custlens.settings import Settings, load_settings
from features.lake.ingest import ingest
from features.sample.generate import DEFAULT_END, generate
from features.store import apply_definitions
from tests.support.business import SAMPLE_CONFIG

pytestmark = pytest.mark.integration

CUSTOMERS = 2_000
CUTOFF, HORIZON = date(2026, 8, 1), "90d"  # the window ends by the simulated history's end (2026-10-31)
PRIMARY = {"churn": "auc", "repurchase": "auc", "clv": "normalized_gini"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = load_settings(SAMPLE_CONFIG)
    settings = base.model_copy(update={"data_dir": tmp_path_factory.mktemp("backtest") / "data"})
    generate(out_dir=settings.sample_dir, customers=CUSTOMERS, seed=11, start=None, end=DEFAULT_END,
             dirty_rate=0.0, file_format="parquet")  # fmt: skip
    ingest(settings, settings.sample_dir)
    apply_definitions(settings)
    return settings


@pytest.fixture(scope="module")
def result(settings: Settings) -> dict:
    env = {
        "CUSTLENS_DATA_DIR": str(settings.data_dir),
        "CUSTLENS_TRAINING__TRACKING_URI": f"sqlite:///{Path(settings.data_dir).parent / 'mlruns' / 'mlflow.db'}",
    }
    args = ["backtest", "--config", str(SAMPLE_CONFIG), "--cutoff", CUTOFF.isoformat(), "--horizon", HORIZON,
            "--trials", "2", "--resamples", "200", "--format", "json"]  # fmt: skip
    answer = CliRunner().invoke(app, args, env=env)
    assert answer.exit_code == 0, answer.output
    return json.loads(answer.stdout)


def _value(result: dict, model: str, candidate: str, metric: str) -> dict:
    (row,) = [r for r in result["rows"] if (r["model"], r["candidate"], r["metric"]) == (model, candidate, metric)]
    return row


def test_the_json_names_the_holdout_and_every_candidate_of_every_model(result: dict) -> None:
    assert result["cutoff"] == CUTOFF.isoformat() and result["horizon_days"] == 90
    evaluated = {(r["model"], r["candidate"]) for r in result["rows"]}
    for model in ("churn", "repurchase"):
        names = ("bgnbd", "logistic_rfm", "lightgbm", "lightgbm_bgnbd", "oracle")
        assert {(model, name) for name in names} <= evaluated
    clv = ("bgnbd_gg", "lightgbm", "lightgbm_bgnbd", "lightgbm_two_part", "lightgbm_bgnbd_two_part", "oracle")
    assert {("clv", name) for name in clv} <= evaluated
    learned = [r for r in result["rows"] if r["kind"] == "learned"]
    assert learned and all(set(r["diff_vs_best_baseline"]) == {"value", "ci_low", "ci_high"} for r in learned)


def test_every_candidate_is_measured_on_the_same_customers(result: dict) -> None:
    populations = result["populations"]
    assert populations["repurchase"]["customers"] == populations["clv"]["customers"]
    assert 0 < populations["churn"]["customers"] <= populations["repurchase"]["customers"]
    # churners and buyers are the two sides of one horizon among the active customers
    assert populations["churn"]["positives"] >= populations["repurchase"]["negatives"] - (
        populations["repurchase"]["customers"] - populations["churn"]["customers"]
    )


@pytest.mark.parametrize("model", list(PRIMARY))
def test_no_candidate_beats_the_generators_truth_beyond_noise(result: dict, model: str) -> None:
    metric = PRIMARY[model]
    oracle = _value(result, model, "oracle", metric)
    others = [r for r in result["rows"] if r["model"] == model and r["metric"] == metric and r["kind"] != "oracle"]
    assert others
    for row in others:
        assert row["value"] <= oracle["value"] + 0.01, row


@pytest.mark.parametrize("model", list(PRIMARY))
def test_baselines_and_models_rank_far_better_than_chance(result: dict, model: str) -> None:
    metric = PRIMARY[model]
    floor = 0.5 if metric == "auc" else 0.0
    two_parts = ("lightgbm_two_part", "lightgbm_bgnbd_two_part") if model == "clv" else ()
    for candidate in ("lightgbm", "lightgbm_bgnbd", "bgnbd_gg" if model == "clv" else "bgnbd", *two_parts):
        assert _value(result, model, candidate, metric)["ci_low"] > floor + 0.1


def test_the_oracle_beats_the_best_baseline_with_an_interval_above_zero(result: dict) -> None:
    for model, metric in PRIMARY.items():
        assert _value(result, model, "oracle", metric)["diff_vs_best_baseline"]["ci_low"] > 0, model
