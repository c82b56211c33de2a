"""One trained project for the serving and batch tests: a few thousand generated customers
ingested, snapshotted, applied to Feast, materialized online, and all four models trained and
registered as @champion. Built once per test run, whichever test file asks first; the others wait
on a file lock and reuse it (pytest-xdist runs files in separate processes).

Tests must not change the shared project: one that promotes a model or writes scores works on
its own copy of the tracking store or its own sink."""

from __future__ import annotations

import fcntl
import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr

from custlens.settings import Settings, load_settings
from tests.support.business import SAMPLE_CONFIG

CUSTOMERS = 3_000
_READY = "ready.json"


def project_settings(root: Path) -> Settings:
    base = load_settings(SAMPLE_CONFIG)
    return base.model_copy(
        update={
            "data_dir": root / "data",
            "pii_salt": SecretStr("test-salt"),
            "api_keys": SecretStr("test-key,other-key"),
            "training": base.training.model_copy(
                update={
                    "trials": 2,
                    "timeout_seconds": 60,
                    "bootstrap_resamples": 200,
                    "tracking_uri": f"sqlite:///{root / 'mlruns/mlflow.db'}",
                }
            ),
            "serving": base.serving.model_copy(update={"reload_poll_seconds": 0.0}),
        }
    )


def _build(settings: Settings) -> None:
    from features.lake.ingest import ingest
    from features.online import materialize
    from features.sample.generate import DEFAULT_END, generate
    from features.snapshots import build_snapshots, default_cutoffs
    from features.store import apply_definitions

    generate(out_dir=settings.sample_dir, customers=CUSTOMERS, seed=11, start=None, end=DEFAULT_END,
             dirty_rate=0.0, file_format="parquet")  # fmt: skip
    ingest(settings, settings.sample_dir)
    build_snapshots(settings, default_cutoffs(settings))  # the data ends in 2026-10: as of 2026-11-01
    apply_definitions(settings)
    materialize(settings)
    from training.tracking import connect, registered_name
    from training.train import CHAMPION, train_all

    client = connect(settings)
    for result in train_all(settings, ["churn", "repurchase", "clv", "segments"]):
        # Serving needs a champion of each model, good or not: tiny budgets may lose to a baseline.
        if not result.promoted:
            client.set_registered_model_alias(registered_name(result.model), CHAMPION, result.version)


def trained_project(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    """The shared trained project's settings (built on first call of the run)."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist every worker's temp folder sits in the run's folder; alone, the run's folder is ours.
    root = (base.parent if worker_id != "master" else base) / "trained-project"
    root.mkdir(parents=True, exist_ok=True)
    settings = project_settings(root)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (root / _READY).exists():
                _build(settings)
                (root / _READY).write_text(json.dumps({"customers": CUSTOMERS}))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return settings


def on_own_tracking(shared: Settings, folder: Path) -> Settings:
    """The shared project with a copy of its tracking store in `folder`: runs, versions and aliases
    made there leave the shared one as it is (new runs' artifacts go beside the shared ones)."""
    assert shared.training.tracking_uri is not None
    copy = folder / "mlflow.db"
    with (
        sqlite3.connect(shared.training.tracking_uri.removeprefix("sqlite:///")) as source,
        sqlite3.connect(copy) as to,
    ):
        source.backup(to)
    return shared.model_copy(
        update={"training": shared.training.model_copy(update={"tracking_uri": f"sqlite:///{copy}"})}
    )


def scoring_copy(shared: Settings, folder: Path) -> Settings:
    """`on_own_tracking`, for tests that score: the batch runs are recorded in the copy, and no KPI
    cubes by segment are written (the shared data folder is read only)."""
    own = on_own_tracking(shared, folder)
    return own.model_copy(update={"batch": own.batch.model_copy(update={"kpi_segments": False})})
