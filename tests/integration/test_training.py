"""Training end to end on a few thousand generated customers: frames from Feast, tuning, MLflow
runs with nested trials and baselines, the registry and the @champion gate, and model behaviour."""

from __future__ import annotations

from datetime import timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import SecretStr

from custlens.settings import Settings, load_settings
from features.lake.ingest import ingest
from features.sample.generate import DEFAULT_END, generate
from features.snapshots import build_snapshots, default_cutoffs
from features.store import apply_definitions
from tests.support.business import SAMPLE_CONFIG
from training.evaluation import beats
from training.frames import CATEGORY_FEATURES, build_model_frame, cutoff_of, feature_matrix, label_window
from training.packaging import ModelBundle
from training.registry import CHALLENGER, CHAMPION
from training.tracking import connect, experiment_name, registered_name
from training.train import MIN_SEGMENT_STABILITY, ModelResult, train_all

pytestmark = pytest.mark.integration

CUSTOMERS = 4_000
MODELS = ["churn", "repurchase", "clv", "segments"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("training")
    base = load_settings(SAMPLE_CONFIG)
    settings = base.model_copy(
        update={
            "data_dir": root / "data",
            "pii_salt": SecretStr("test-salt"),
            "training": base.training.model_copy(
                update={
                    "trials": 4,
                    "timeout_seconds": 120,
                    "tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
                }
            ),
        }
    )
    generate(out_dir=settings.sample_dir, customers=CUSTOMERS, seed=3, start=None, end=DEFAULT_END,
             dirty_rate=0.0, file_format="parquet")  # fmt: skip
    ingest(settings, settings.sample_dir)
    build_snapshots(settings, default_cutoffs(settings, today=DEFAULT_END + timedelta(days=1)))
    apply_definitions(settings)
    return settings


@pytest.fixture(scope="module")
def first(settings: Settings) -> dict[str, ModelResult]:
    return {result.model: result for result in train_all(settings, MODELS)}


def alias_version(client: MlflowClient, model: str, alias: str) -> str | None:
    """The version that holds the alias, None when no version does."""
    try:
        return str(client.get_model_version_by_alias(registered_name(model), alias).version)
    except MlflowException:
        return None


def test_every_model_is_registered_and_the_first_good_one_is_champion(settings: Settings, first: dict) -> None:
    client = connect(settings)

    for model in MODELS:
        result = first[model]
        versions = client.search_model_versions(f"name = '{registered_name(model)}'")
        assert [str(v.version) for v in versions] == ["1"], model
        # the first version of a model has no champion to beat: its baselines (or stability) decide
        if model == "segments":
            assert result.promoted == (result.metrics["test_stability_across_seeds"] >= MIN_SEGMENT_STABILITY)
        else:
            assert result.promoted == all(beats(result.metrics, b, model, 0.0) for b in result.baselines.values())
        holder, other = (CHAMPION, CHALLENGER) if result.promoted else (CHALLENGER, CHAMPION)
        assert (alias_version(client, model, holder), alias_version(client, model, other)) == ("1", None), model
        assert result.decision.startswith("promoted:" if result.promoted else "not promoted:"), model
        assert versions[0].tags["promotion"] == result.decision, model
        assert client.get_run(result.run_id).data.tags["promotion"] == result.decision, model


def test_classifiers_beat_logistic_rfm_and_stay_close_to_bgnbd(first: dict) -> None:
    churn = first["churn"]
    assert churn.metrics["test_auc"] > churn.baselines["logistic_rfm"]["test_auc"]
    for model in ("churn", "repurchase"):
        assert first[model].metrics["test_auc"] > 0.7
        assert first[model].metrics["test_auc"] > first[model].baselines["bgnbd"]["test_auc"] - 0.02


def test_clv_ranks_revenue_and_predicts_a_plausible_total(first: dict) -> None:
    clv = first["clv"].metrics
    assert clv["test_normalized_gini"] > 0.5
    assert 0.5 < clv["test_total_ratio"] < 2.0


def test_runs_and_baselines_log_the_same_metric_keys(settings: Settings, first: dict) -> None:
    client = connect(settings)
    experiment = client.get_experiment_by_name(experiment_name("churn"))
    runs = client.search_runs([experiment.experiment_id])
    model_keys = {k for k in client.get_run(first["churn"].run_id).data.metrics if k.startswith("test_")}
    baselines = [r for r in runs if r.data.tags.get("kind") == "baseline"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first["churn"].run_id
              and "trial_state" in r.data.tags]  # fmt: skip

    assert {b.data.tags["baseline"] for b in baselines} == {"logistic_rfm", "bgnbd"}
    for baseline in baselines:
        assert {k for k in baseline.data.metrics if k.startswith("test_")} == model_keys
    assert len(trials) == 4


def test_the_registered_model_loads_and_scores_like_the_bundle(settings: Settings, first: dict) -> None:
    connect(settings)
    frame = build_model_frame(settings, "churn").part("test").head(50)

    pyfunc = mlflow.pyfunc.load_model(f"models:/{registered_name('churn')}/1")
    bundle: ModelBundle = pyfunc.unwrap_python_model().bundle

    inputs = feature_matrix(frame, bundle.categories)  # the signature's types: numbers as float64
    inputs[list(CATEGORY_FEATURES)] = inputs[list(CATEGORY_FEATURES)].astype("object")

    np.testing.assert_allclose(pyfunc.predict(inputs)["probability"], bundle.predict(frame)["probability"])


def test_churn_probability_rises_when_the_last_order_recedes(settings: Settings, first: dict) -> None:
    connect(settings)
    bundle: ModelBundle = mlflow.pyfunc.load_model(f"models:/{registered_name('churn')}/1").unwrap_python_model().bundle
    frame = build_model_frame(settings, "churn").part("test")
    recent = frame[pd.to_numeric(frame["days_since_last_order"]) < 60].head(300).copy()

    later = recent.copy()
    later["days_since_last_order"] = pd.to_numeric(later["days_since_last_order"]) + 180
    later["days_since_last_engagement"] = pd.to_numeric(later["days_since_last_engagement"]) + 180

    assert bundle.predict(later)["probability"].mean() > bundle.predict(recent)["probability"].mean() + 0.05


def test_retraining_on_the_same_data_does_not_replace_the_champion(settings: Settings, first: dict) -> None:
    had_champion = first["churn"].promoted

    (again,) = train_all(settings, ["churn"])

    client = connect(settings)
    assert again.version == "2" and not again.promoted
    assert alias_version(client, "churn", CHALLENGER) == "2"
    assert alias_version(client, "churn", CHAMPION) == ("1" if had_champion else None)
    # refused by the champion when there is one (no gain of the margin on the same data), else by a baseline again
    assert ("champion v1" in again.decision) == had_champion
    assert ("baseline" in again.decision) != had_champion
    logged = client.get_run(again.run_id).data.metrics
    if had_champion:  # v1 re-scored on the same test rows gives v1's own test metric
        assert logged["champion_test_auc"] == pytest.approx(first["churn"].metrics["test_auc"])
    else:
        assert "champion_test_auc" not in logged


def test_no_training_or_validation_label_reaches_the_test_window(settings: Settings) -> None:
    for model in ("churn", "repurchase", "clv"):
        frame = build_model_frame(settings, model)
        window = timedelta(days=label_window(settings, model))
        seen = frame.rows[frame.rows["split"] != "test"]

        assert (seen["cutoff"] + window <= cutoff_of(frame.split.test)).all(), model
        assert set(frame.part("test")["cutoff"]) == {cutoff_of(frame.split.test)}


def test_segments_are_named_and_stable_across_seeds(first: dict) -> None:
    segments = first["segments"].metrics
    assert segments["test_stability_across_seeds"] >= 0.9
    assert 3 <= segments["test_k"] <= 8
