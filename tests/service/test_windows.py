"""Names that do not lie: a CLV model trained with a 242-day window states 242 days beside its
scores in /score, /metadata, the scoring run's manifest and its MLflow run, after the config has
gone back to 365 days: the window is read from the served version, never from today's config."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from custlens.settings import Settings
from features.snapshot_reader import load_packed_snapshot
from serving.batch import score_customers
from serving.runtime import Runtime, resolve, score
from tests.support.sinks import sink_runs
from tests.support.trained import on_own_tracking, trained_project
from training.tracking import connect, registered_name
from training.train import CHAMPION, train_all

TRAINED_CLV_DAYS = 242


def with_training(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"training": settings.training.model_copy(update=changes)})


@pytest.fixture(scope="module")
def config_now(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    """The shared project on a tracking store of its own, whose CLV champion was trained with a
    242-day window; the settings as they are now, saying 365."""
    own = on_own_tracking(trained_project(tmp_path_factory, worker_id), tmp_path_factory.mktemp("windows-mlruns"))
    (clv,) = train_all(with_training(own, clv_window_days=TRAINED_CLV_DAYS, trials=1), ["clv"])
    assert not clv.skipped, clv.decision
    connect(own).set_registered_model_alias(registered_name("clv"), CHAMPION, clv.version)
    # the shared data folder is read only here: no KPI cubes by segment from these runs
    now = with_training(own, clv_window_days=365)
    return now.model_copy(update={"batch": now.batch.model_copy(update={"kpi_segments": False})})


def expected_windows(settings: Settings) -> dict[str, int]:
    """The shared project's churn and repurchase windows (trained as configured), and CLV's 242."""
    training = settings.training
    return {"churn_days": training.churn_window_days, "repurchase_days": training.repurchase_window_days,
            "clv_days": TRAINED_CLV_DAYS}  # fmt: skip


def test_score_and_metadata_state_the_window_the_served_version_was_trained_with(config_now: Settings) -> None:
    runtime = Runtime(config_now)
    loaded = runtime.load()
    ids = load_packed_snapshot(config_now).customer_ids[:3]

    answer = score(loaded, resolve(loaded, ids, None, max_ids=10), reasons=False)

    assert answer["windows"] == expected_windows(config_now)
    metadata = runtime.metadata()
    assert metadata["windows"] == expected_windows(config_now)
    assert (metadata["models"]["clv"]["window_days"], metadata["models"]["clv"]["window_from"]) == (242, "model")
    assert all(result["known"] and "predicted_clv" in result for result in answer["results"])


def test_the_scoring_run_records_the_window_the_served_version_was_trained_with(
    config_now: Settings, tmp_path: Path
) -> None:
    sink = f"sqlite:///{tmp_path / 'scores.db'}"

    report = score_customers(config_now, sink_uri=sink)

    (run,) = sink_runs(sink)
    assert run.window_days() == expected_windows(config_now)
    params = connect(config_now).get_run(report.run_id).data.params
    assert {key: int(params[f"windows.{key}"]) for key in expected_windows(config_now)} == expected_windows(config_now)
    summary = Console(record=True, width=250)
    summary.print(report.render())
    assert f"clv {TRAINED_CLV_DAYS}" in summary.export_text()
