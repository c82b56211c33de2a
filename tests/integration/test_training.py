"""Training end to end on a few thousand generated customers: frames from Feast, tuning, MLflow
runs with nested trials and baselines, the registry and the @champion gate, and model behaviour."""

from __future__ import annotations

import re
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import SecretStr
from rich.console import Console
from typer.testing import CliRunner

from custlens.cli import app
from custlens.settings import Settings, load_settings
from features.lake.ingest import ingest
from features.model_inputs import spec_of_service
from features.sample.generate import DEFAULT_END, generate
from features.snapshots import build_snapshots, default_cutoffs
from features.store import apply_definitions
from tests.support.business import SAMPLE_CONFIG
from tests.support.trained import on_own_tracking as shared_tracking_copy
from training.baselines.servable import RFM_COLUMNS
from training.evaluation import PRIMARY_METRIC
from training.frames import CATEGORY_FEATURES, build_model_frame, cutoff_of, feature_matrix, label_window
from training.packaging import ModelBundle
from training.registry import CHALLENGER, CHAMPION
from training.specs import SPECS
from training.sufficiency import Sufficiency
from training.tracking import connect, experiment_name, registered_name
from training.train import MIN_SEGMENT_STABILITY, TEST_PREDICTIONS, ModelResult, render, train_all

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
                    "bootstrap_resamples": 200,
                    "tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
                }
            ),
        }
    )
    generate(out_dir=settings.sample_dir, customers=CUSTOMERS, seed=3, start=None, end=DEFAULT_END,
             dirty_rate=0.0, file_format="parquet")  # fmt: skip
    ingest(settings, settings.sample_dir)
    build_snapshots(settings, default_cutoffs(settings))
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
        found = client.search_model_versions(f"name = '{registered_name(model)}'")
        versions = [v for v in found if v.tags.get("kind") != "baseline"]
        assert [str(v.version) for v in versions] == ["1"], model
        # the first version of a model has no champion to beat: its baselines (or stability) decide
        if model == "segments":
            assert result.promoted == (result.metrics["test_stability_across_seeds"] >= MIN_SEGMENT_STABILITY)
        else:  # every baseline is an incumbent of the gate, each with its interval
            assert {check.against for check in result.gate} - {""} == set(result.baselines), model
            assert result.promoted == all(check.passed for check in result.gate), model
            assert versions[0].tags["gate_diff_vs_" + SPECS[model].baselines[0]].startswith(("pass: ", "fail: "))
        if result.promoted:
            assert (alias_version(client, model, CHAMPION), alias_version(client, model, CHALLENGER)) == ("1", None)
        elif model != "segments":
            # it lost: the best baseline serves, registered as version 2 of the same model
            assert alias_version(client, model, CHALLENGER) == "1", model
            champion = client.get_model_version_by_alias(registered_name(model), CHAMPION)
            assert (str(champion.version), champion.tags["kind"]) == ("2", "baseline"), model
            best = max(result.baselines, key=lambda name: result.baselines[name][PRIMARY_METRIC[model][0]])
            assert champion.tags["flavour"] == best and f"v2 serves: baseline {best}" in result.served, model
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


def test_clv_goes_to_the_gate_as_the_design_with_the_better_validation_gini(settings: Settings, first: dict) -> None:
    # given the default training.clv_design auto and a validation window to tune on: both designs fitted
    assert first["clv"].data.enough("validation")
    run = connect(settings).get_run(first["clv"].run_id)
    # then the run names the one with the better validation Gini
    ginis = {design: run.data.metrics[f"validation_normalized_gini_{design}"] for design in ("tweedie", "two_part")}
    chosen = run.data.params["clv_design"]
    assert chosen == run.data.tags["clv_design"] == max(ginis, key=lambda design: ginis[design])
    # and the registered version is that design, with its range
    uri = f"models:/{registered_name('clv')}/{first['clv'].version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(settings.data_dir / "clv-bundle")))
    bundle = ModelBundle.load(next(local.rglob("bundle.json")))
    assert bundle.meta["clv_design"] == chosen and (bundle.value_booster is not None) == (chosen == "two_part")
    assert "value_range" in bundle.meta


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

    # the signature's types: numbers as float64
    inputs = feature_matrix(frame, bundle.categories, spec_of_service(bundle.feature_service).inputs)
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

    before, after = bundle.predict(recent)["probability"], bundle.predict(later)["probability"]
    assert after.mean() > before.mean() + 0.05
    # the monotone constraints (training.specs): not only on average, for every customer
    down = after < before - 1e-12
    assert not down.any(), (before[down], after[down])


def test_retraining_on_the_same_data_does_not_replace_the_champion(settings: Settings, first: dict) -> None:
    had_champion = first["churn"].promoted
    client = connect(settings)
    champion_before = alias_version(client, "churn", CHAMPION)  # v1, or the baseline that serves instead

    (again,) = train_all(settings, ["churn"])

    assert not again.promoted
    assert alias_version(client, "churn", CHALLENGER) == again.version
    # the same champion: a learned one keeps its place, a baseline refitted on the same data is the same fit
    assert alias_version(client, "churn", CHAMPION) == champion_before
    if had_champion:  # a learned champion at least as good as every baseline on these rows keeps serving
        assert again.served.startswith(f"the champion v{champion_before} keeps serving")
    else:
        assert again.served == f"v{champion_before} keeps serving: the same baseline fit"
    # refused by the champion when there is one (no gain of the margin on the same data), else by a baseline again
    assert ("champion v1" in again.decision) == had_champion
    assert ("baseline" in again.decision) != had_champion
    logged = client.get_run(again.run_id).data.metrics
    if had_champion:  # v1 re-scored on the same test rows gives v1's own test metric
        assert logged["champion_test_auc"] == pytest.approx(first["churn"].metrics["test_auc"])


def test_each_run_logs_its_gate_its_test_predictions_and_its_baselines_fitted_parameters(
    settings: Settings, first: dict
) -> None:
    client = connect(settings)
    churn = first["churn"]
    run = client.get_run(churn.run_id)
    for baseline in ("logistic_rfm", "bgnbd"):
        assert (
            run.data.metrics[f"gate_diff_vs_{baseline}_ci_low"] < run.data.metrics[f"gate_diff_vs_{baseline}_ci_high"]
        )
        assert f"gate_calibration_error_diff_vs_{baseline}" in run.data.metrics
    assert run.data.tags["promotion"] == churn.decision

    folder = Path(mlflow.artifacts.download_artifacts(run_id=churn.run_id, artifact_path=TEST_PREDICTIONS))
    predictions = pd.read_parquet(folder)
    test = build_model_frame(settings, "churn").part("test")
    assert list(predictions.columns) == ["customer_id", "cutoff", "label", "candidate", "logistic_rfm", "bgnbd"]
    assert len(predictions) == len(test) and predictions["customer_id"].tolist() == test["customer_id"].tolist()

    experiment = client.get_experiment_by_name(experiment_name("clv"))
    (gg,) = client.search_runs([experiment.experiment_id], "tags.baseline = 'bgnbd_gamma_gamma'")
    assert {"r", "alpha", "a", "b", "p", "q", "gamma"} <= set(gg.data.params)
    assert float(gg.data.params["r"]) > 0 and float(gg.data.params["gamma"]) > 0


def test_the_model_and_each_baseline_run_log_the_same_test_figures_and_predictions(
    settings: Settings, first: dict
) -> None:
    client = connect(settings)
    experiment = client.get_experiment_by_name(experiment_name("churn"))
    baselines = {run.data.tags["baseline"]: run
                 for run in client.search_runs([experiment.experiment_id], "tags.kind = 'baseline'")}  # fmt: skip

    def artifacts(run_id: str) -> set[str]:
        return {artifact.path for artifact in client.list_artifacts(run_id)}

    def test_predictions(run_id: str) -> pd.DataFrame:
        return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_PREDICTIONS))

    figures = {"gains.png", "calibration.png"}
    explained = {"feature_importance.png", "shap_summary.png"}
    assert figures | explained | {TEST_PREDICTIONS} <= artifacts(first["churn"].run_id)
    everyone = test_predictions(first["churn"].run_id)
    for name, run in baselines.items():
        # what a reviewer opens on a baseline's run looks like the model's, drawn from its own scores
        assert figures | {TEST_PREDICTIONS} <= artifacts(run.info.run_id), name
        own = test_predictions(run.info.run_id)
        assert list(own.columns) == ["customer_id", "cutoff", "label", name]
        pd.testing.assert_frame_equal(own, everyone[own.columns])
    assert {"r", "alpha", "a", "b"} <= set(baselines["bgnbd"].data.params)
    assert {"intercept", *(f"coef_{name}" for name in RFM_COLUMNS)} <= set(baselines["logistic_rfm"].data.params)
    clv = client.get_experiment_by_name(experiment_name("clv"))
    (gg,) = client.search_runs([clv.experiment_id], "tags.baseline = 'bgnbd_gamma_gamma'")
    assert figures <= artifacts(gg.info.run_id) and figures <= artifacts(first["clv"].run_id)
    for model in ("churn", "repurchase", "clv"):
        if first[model].promoted:
            continue
        # a baseline that serves is registered in the run that fitted and measured it: what the
        # registry's version links to shows its parameters, figures and predictions
        champion = client.get_model_version_by_alias(registered_name(model), CHAMPION)
        run = client.get_run(champion.run_id)
        flavour = champion.tags["flavour"]
        assert (run.data.tags["kind"], run.data.tags["baseline"], run.data.tags["served_baseline"]) == (
            "baseline", flavour, flavour,
        ), model  # fmt: skip
        assert figures | {TEST_PREDICTIONS} <= artifacts(champion.run_id) and run.data.params, model


def test_the_summary_shows_each_gate_check_with_its_interval_at_80_columns(first: dict) -> None:
    summary = Console(record=True, width=80)

    summary.print(render(list(first.values())))

    printed = summary.export_text()
    assert "promotion gate: 95% paired-bootstrap intervals" in printed
    assert "calibration error" in printed and "total ratio" in printed
    assert "oracle auc" in printed  # generated sample data: the oracle is known, in a line of its own
    # fewer, wider columns: no interval is folded over two lines
    assert all(check.shown() in printed for result in first.values() for check in result.gate)


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


def on_own_tracking(settings: Settings, root: Path, **training: Any) -> Settings:
    """The module's project with other training settings and a tracking store of its own (the
    module's registry keeps its versions)."""
    changes = {"trials": 1, "tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", **training}
    return settings.model_copy(update={"training": settings.training.model_copy(update=changes)})


def test_a_window_too_long_is_skipped_by_its_key_and_the_others_still_train(settings: Settings, tmp_path: Path) -> None:
    long = on_own_tracking(settings, tmp_path, clv_window_days=3 * 365)

    clv, segments = train_all(long, ["clv", "segments"])

    assert clv.skipped and not clv.promoted
    assert clv.decision.startswith("skipped: training.clv_window_days (1095 days) does not fit the history")
    assert "longest window that fits is" in clv.decision
    client = connect(long)
    assert client.get_run(clv.run_id).data.tags["skipped"] == clv.decision.removeprefix("skipped: ")
    # the baseline fitted on the whole history serves, its run logs the fit by the paper's names
    served = client.get_run(client.get_model_version_by_alias(registered_name("clv"), CHAMPION).run_id)
    assert {"r", "alpha", "a", "b", "p", "q", "gamma"} <= set(served.data.params)
    assert segments.version == "1" and not segments.skipped
    summary = Console(record=True, width=250)
    summary.print(render([clv, segments]))
    printed = summary.export_text()
    assert "clv: skipped: training.clv_window_days" in printed and "segments v1:" in printed


def test_a_model_below_the_data_minimums_is_fitted_untuned_and_not_promoted(settings: Settings, tmp_path: Path) -> None:
    counts = Sufficiency.of(SPECS["churn"], build_model_frame(settings, "churn"), settings.training).counts
    assert counts["validation"].rows < counts["test"].rows < counts["train"].rows
    minimum = counts["test"].rows + 1  # validation and test fall short, training does not
    small = on_own_tracking(settings, tmp_path, min_split_rows=minimum)

    (churn,) = train_all(small, ["churn"])

    expected = f"only {counts['test'].rows:,} rows in the test window (training.min_split_rows: {minimum})"
    assert churn.decision == f"not promoted: {expected}" and not churn.promoted
    client = connect(small)
    run = client.get_run(churn.run_id)
    assert run.data.tags["data_test"] == churn.decision
    assert run.data.tags["data_validation"].startswith("not tuned: only")
    assert run.data.params["negatives_test"] == str(counts["test"].negatives)
    assert "validation_loss" not in run.data.metrics and "test_auc" in run.data.metrics  # measured, not gated
    assert alias_version(client, "churn", CHALLENGER) == "1"
    # something still serves: the best baseline on the (small) test window, as a version of its own
    champion = client.get_model_version_by_alias(registered_name("churn"), CHAMPION)
    assert (str(champion.version), champion.tags["kind"]) == ("2", "baseline")


def test_snapshots_before_the_first_order_leave_a_model_skipped_not_crashed(settings: Settings, tmp_path: Path) -> None:
    # the advice for a window too long, followed on a history that starts with the first snapshot
    earlier = settings.model_copy(update={"data_dir": tmp_path / "data"})
    shutil.copytree(settings.data_dir, earlier.data_dir)
    first = default_cutoffs(settings)[0]
    build_snapshots(earlier, [date(first.year - 2 + (first.month + n - 1) // 12, (first.month + n - 1) % 12 + 1, 1)
                              for n in range(24)])  # fmt: skip
    apply_definitions(earlier)

    (clv,) = train_all(on_own_tracking(earlier, tmp_path, clv_window_days=730), ["clv"])

    assert clv.skipped
    assert clv.decision.startswith("skipped: not trained: only 0 rows in the training rows at ")


def test_promote_by_hand_sets_the_champion_with_who_when_and_why_and_models_lists_it(
    settings: Settings, first: dict, tmp_path: Path
) -> None:
    own = shared_tracking_copy(settings, tmp_path)  # the module's versions, in a store of its own
    runner = CliRunner()
    config = tmp_path / "custlens.yaml"
    config.write_text(f"data_dir: {own.data_dir}\ntraining:\n  tracking_uri: {own.training.tracking_uri}\n")

    promoted = runner.invoke(app, ["promote", "repurchase", "1", "--reason", "reviewed by hand", "-c", str(config)])
    unknown = runner.invoke(app, ["promote", "repurchase", "9", "--reason", "why not", "-c", str(config)])
    listed = runner.invoke(app, ["models", "-c", str(config)], env={"COLUMNS": "250"})

    assert promoted.exit_code == 0, promoted.output
    version = connect(own).get_model_version(registered_name("repurchase"), "1")
    assert "champion" in version.aliases and "challenger" not in version.aliases
    assert version.tags["promotion_reason"] == "reviewed by hand" and version.tags["promoted_by"]
    assert version.tags["promoted_at"].startswith("20")
    assert unknown.exit_code == 2 and "custlens-repurchase has no version '9'; its versions: 1" in unknown.output
    assert listed.exit_code == 0, listed.output
    flat = " ".join(listed.output.split())  # the decisions wrap at the terminal's width (80 under xdist)
    assert "repurchase v1: " in flat and "by hand by" in flat
    assert all(f"{model} v1:" in flat for model in MODELS)
    assert "learned" in listed.output
    assert re.search(r"repurchase\s*│\s*1\s*│\s*learned\s*│\s*@champion", listed.output), listed.output
