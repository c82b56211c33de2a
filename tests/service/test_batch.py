"""Batch scoring (`custlens score`): every sink holds each as-of's complete result once, a re-run
of a date leaves the same rows, a job killed at any moment leaves the previous complete result,
batch scores equal online ones, and an unreachable sink fails before any scoring."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from custlens.cli import app
from custlens.errors import CustlensError
from custlens.settings import Settings
from features.lake.tables import crosswalk_path, cutoff_instant
from features.online import OnlineFeatures
from features.snapshot_reader import load_packed_snapshot, snapshot_cutoffs, snapshot_features_frame
from serving.batch import BatchReport, decile_bins, population_stability, score_customers
from serving.scorer import Scorer
from serving.sinks import FAILED, RUNNING, SCORES, SCORES_TABLE, SUCCEEDED, open_sink
from tests.support.databases import postgres_schema_url
from tests.support.processes import wait_for
from tests.support.run_holder import holding
from tests.support.sinks import sink_runs
from tests.support.trained import on_own_tracking, trained_project
from training.tracking import connect

CHUNK_ROWS = 1_000  # the smallest allowed: several chunks even in the small project
# What differs between two runs of the same as-of: which run wrote the row.
RUN_COLUMNS = ["scoring_run_id"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Settings:
    """The shared trained project, with a tracking store of our own: batch runs are recorded in it."""
    own = on_own_tracking(trained_project(tmp_path_factory, worker_id), tmp_path_factory.mktemp("batch-mlruns"))
    return own.model_copy(update={
        # the shared project's data folder is read only here; test_kpi_segments_follow_the_scores copies it
        "batch": own.batch.model_copy(update={"chunk_rows": CHUNK_ROWS, "kpi_segments": False}),
    })  # fmt: skip


@pytest.fixture(scope="module")
def cutoffs(project: Settings) -> tuple[date, date]:
    """The snapshot before the latest, and the latest (the one materialized online)."""
    available = snapshot_cutoffs(project)
    return available[-2], available[-1]


@pytest.fixture(scope="module")
def customers(project: Settings, cutoffs: tuple[date, date]) -> dict[date, int]:
    """Customers per snapshot: later snapshots know customers who signed up since."""
    return {cutoff: len(load_packed_snapshot(project, cutoff)) for cutoff in cutoffs}


def postgres_sink() -> Iterator[str]:
    """A schema of our own in the test database, dropped afterwards."""
    yield from postgres_schema_url("custlens_batch")


@pytest.fixture(params=["sqlite", "postgresql", "parquet", "csv"])
def sink_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = request.param
    if kind == "postgresql":
        yield from postgres_sink()
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'scores.db'}"
    else:
        yield f"{kind}:{tmp_path / 'scores'}"


def read_sink(uri: str, as_of: date | None = None) -> pd.DataFrame:
    sink = open_sink(uri)
    try:
        return sink.scores(as_of)
    finally:
        sink.close()


def manifest(uri: str) -> list[tuple[str, str, date]]:
    return [(run.run_id, run.status, run.as_of) for run in sink_runs(uri)]


def without_run(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=RUN_COLUMNS).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Every sink


def test_every_sink_holds_each_as_of_once_with_every_column(
    project: Settings, cutoffs: tuple[date, date], customers: dict[date, int], sink_uri: str
) -> None:
    earlier, latest = cutoffs
    first = score_customers(project, earlier, sink_uri)
    second = score_customers(project, None, sink_uri)

    rows = read_sink(sink_uri)
    assert second.as_of == latest and (first.rows, second.rows) == (customers[earlier], customers[latest])
    assert rows.groupby("as_of")["customer_id"].nunique().to_dict() == customers
    assert len(rows) == sum(customers.values())
    assert set(rows.loc[rows["as_of"] == latest, "scoring_run_id"]) == {second.run_id}
    assert rows[["churn_model_version", "segments_model_version"]].notna().all().all()
    churn = rows["churn_probability"].astype(float)
    assert churn.between(0, 1).sum() > 0 and (churn.between(0, 1) | rows["churn_not_scored_reason"].notna()).all()
    assert rows["rfm_segment"].notna().all() and rows["behavioural_segment"].notna().all()
    assert (rows["currency"] == "VND").all()  # the sample's shop; CLV in whole dong
    clv = rows["predicted_clv"].astype(float).to_numpy()
    np.testing.assert_array_equal(clv, np.round(clv))
    # with its P10-P90 range, in the same whole dong (the mean may lie outside a zero-heavy range)
    low, high = (rows[name].astype(float).to_numpy() for name in ("predicted_clv_p10", "predicted_clv_p90"))
    assert not np.isnan(low).any() and (low <= high).all() and (high > 0).any()
    np.testing.assert_array_equal(high, np.round(high))
    assert manifest(sink_uri) == [(first.run_id, SUCCEEDED, earlier), (second.run_id, SUCCEEDED, latest)]


def test_each_customer_carries_the_crm_id_signed_up_first(project: Settings, sink_uri: str) -> None:
    score_customers(project, None, sink_uri)
    rows = read_sink(sink_uri).set_index("customer_id")["crm_customer_id"]
    crosswalk = pq.read_table(crosswalk_path(project)).to_pandas()
    crm = crosswalk[crosswalk["source"] == project.crm_source].sort_values(["signup_at", "source_customer_id"])
    expected = crm.groupby("customer_id")["source_customer_id"].first().reindex(rows.index)
    assert expected.isna().sum() > 0 and expected.notna().sum() > 0  # some customers never had a CRM account
    pd.testing.assert_series_equal(rows, expected, check_names=False)


def test_scoring_the_same_as_of_twice_leaves_the_same_rows_and_keeps_earlier_dates(
    project: Settings, cutoffs: tuple[date, date], sink_uri: str
) -> None:
    earlier, latest = cutoffs
    score_customers(project, earlier, sink_uri)
    score_customers(project, latest, sink_uri)
    once = read_sink(sink_uri)

    again = score_customers(project, latest, sink_uri)

    twice = read_sink(sink_uri)
    pd.testing.assert_frame_equal(without_run(twice), without_run(once))
    assert set(twice.loc[twice["as_of"] == latest, "scoring_run_id"]) == {again.run_id}
    assert twice.loc[twice["as_of"] == earlier].equals(once.loc[once["as_of"] == earlier])
    assert again.psi and all(value == pytest.approx(0.0, abs=1e-12) for value in again.psi.values())


@pytest.mark.parametrize("kind", ["sqlite", "parquet"])
def test_listed_customers_replace_only_their_own_rows(
    project: Settings, cutoffs: tuple[date, date], customers: dict[date, int], kind: str, tmp_path: Path
) -> None:
    latest = cutoffs[1]
    uri = f"sqlite:///{tmp_path / 'scores.db'}" if kind == "sqlite" else f"parquet:{tmp_path / 'scores'}"
    full = score_customers(project, latest, uri)
    ids = load_packed_snapshot(project).customer_ids[:10]
    crm = read_sink(uri).dropna(subset=["crm_customer_id"]).iloc[20:22]
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join(["customer_id", *ids, *crm["crm_customer_id"], "C-nobody", ""]) + "\n")

    report = score_customers(project, latest, uri, listed)

    rows = read_sink(uri)
    assert report.rows == 12 and report.not_found == ["C-nobody"]
    rescored = set(rows.loc[rows["scoring_run_id"] == report.run_id, "customer_id"])
    assert rescored == {*ids, *crm["customer_id"]}
    assert len(rows) == customers[latest] and (rows["scoring_run_id"] == full.run_id).sum() == customers[latest] - 12


# ---------------------------------------------------------------------------------------------
# Summary: migration, drift, the MLflow run


def test_the_migration_matrix_counts_each_customers_move_since_the_previous_as_of(
    project: Settings, cutoffs: tuple[date, date], tmp_path: Path
) -> None:
    earlier, latest = cutoffs
    uri = f"sqlite:///{tmp_path / 'scores.db'}"
    some = tmp_path / "some.txt"
    some.write_text("\n".join(load_packed_snapshot(project, earlier).customer_ids[::2]))
    score_customers(project, earlier, uri, some)  # half the customers: the others are "(none)" before

    report = score_customers(project, latest, uri)

    rows = read_sink(uri)
    before = rows[rows["as_of"] == earlier].set_index("customer_id")
    now = rows[rows["as_of"] == latest].set_index("customer_id")
    for migration in report.migrations:
        previous = before[migration.column].reindex(now.index).fillna("(none)")
        expected = pd.crosstab(previous, now[migration.column]).rename_axis(index="previous", columns="current")
        pd.testing.assert_frame_equal(migration.matrix(), expected, check_dtype=False, check_names=False)
    assert [m.column for m in report.migrations] == ["rfm_segment", "behavioural_segment"]
    assert report.migrations[0].matrix().loc["(none)"].sum() == len(now) - len(before)


def test_the_file_and_sql_sinks_give_the_same_migration(
    project: Settings, cutoffs: tuple[date, date], tmp_path: Path
) -> None:
    results = {}
    for uri in (f"sqlite:///{tmp_path / 'scores.db'}", f"csv:{tmp_path / 'scores'}"):
        score_customers(project, cutoffs[0], uri)
        results[uri] = score_customers(project, cutoffs[1], uri).migrations[0].matrix()
    first, second = results.values()
    pd.testing.assert_frame_equal(first, second, check_dtype=False)


def test_population_stability_is_zero_for_the_same_scores_and_warns_on_a_shift() -> None:
    rng = np.random.default_rng(3)
    scores = rng.beta(2.0, 5.0, 50_000)
    bins = decile_bins(scores)
    assert bins is not None
    assert population_stability(bins, scores) == pytest.approx(0.0, abs=1e-12)
    assert population_stability(bins, rng.beta(2.0, 5.0, 50_000)) < 0.01
    assert population_stability(bins, np.clip(scores + 0.2, 0, 1)) > 0.2


def test_a_drifted_score_is_flagged_and_the_run_is_recorded_in_mlflow(
    project: Settings, cutoffs: tuple[date, date], tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'scores.db'}"
    strict = project.model_copy(update={"batch": project.batch.model_copy(update={"psi_warning": 1e-6})})
    score_customers(strict, cutoffs[0], uri)

    report = score_customers(strict, cutoffs[1], uri)

    assert report.drifted() and "PSI" in _rendered(report)
    run = mlflow.get_run(report.run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "custlens-batch-scoring"
    assert run.info.status == "FINISHED"
    assert run.data.metrics["rows"] == report.rows
    assert run.data.metrics["psi_churn_probability"] == pytest.approx(report.psi["churn_probability"])
    assert run.data.params["churn_version"] == report.versions["churn"]


def _rendered(report: BatchReport) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(report.render())
    return console.export_text()


# ---------------------------------------------------------------------------------------------
# Online = batch


def test_a_customer_gets_the_same_scores_online_and_in_batch(
    project: Settings, cutoffs: tuple[date, date], tmp_path: Path
) -> None:
    latest = cutoffs[1]  # the snapshot the online store serves
    uri = f"parquet:{tmp_path / 'scores'}"
    score_customers(project, None, uri)
    scorer = Scorer.from_registry(project)
    ids = load_packed_snapshot(project).customer_ids[::15]

    online = OnlineFeatures(project).features_frame(ids, scorer.inputs, cutoff_instant(latest))
    online_scores = scorer.score(online, cutoff_instant(latest))

    batch = read_sink(uri, latest).set_index("customer_id").loc[ids].reset_index()
    assert online["known"].all()
    for column in ("churn_probability", "repurchase_probability", "predicted_clv", "predicted_clv_p10",
                   "predicted_clv_p90"):  # fmt: skip
        np.testing.assert_array_equal(batch[column].to_numpy(float), online_scores[column].to_numpy(float))
    for column in ("churn_risk", "expected_next_order_date", "rfm_segment", "behavioural_segment"):
        assert batch[column].tolist() == online_scores[column].tolist(), column


def test_the_batch_features_frame_is_the_online_one(project: Settings) -> None:
    snapshot = load_packed_snapshot(project)
    instant = cutoff_instant(snapshot.cutoff)
    names = Scorer.from_registry(project).inputs
    batch = snapshot_features_frame(snapshot, names, instant, slice(100, 400))
    online = OnlineFeatures(project).features_frame(snapshot.customer_ids[100:400], names, instant)
    pd.testing.assert_frame_equal(batch, online)


# ---------------------------------------------------------------------------------------------
# Errors before any scoring


@pytest.fixture
def no_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("scoring started although the sink is unusable")

    monkeypatch.setattr(Scorer, "from_registry", refuse)


def unusable_sinks(tmp_path: Path) -> dict[str, tuple[str, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    keyed_by_customer = tmp_path / "crm.db"  # the CRM's own table: one row per customer
    engine = sa.create_engine(f"sqlite:///{keyed_by_customer}")
    with engine.begin() as conn:
        columns = [sa.Column(column.name, column.type) for column in SCORES.columns]
        sa.Table(SCORES_TABLE, sa.MetaData(), *columns, sa.PrimaryKeyConstraint("customer_id")).create(conn)
    engine.dispose()
    wrong_file = tmp_path / "wrong" / SCORES_TABLE / "2025-01-01.parquet"
    wrong_file.parent.mkdir(parents=True)
    pq.write_table(pa.table({"customer_id": ["C1"], "churn_probability": ["high"]}), wrong_file)
    return {
        "postgresql, port not a number": ("postgresql://u@host:notaport/crm", "is not a database URL"),
        "sqlite, table keyed on the customer": (f"sqlite:///{keyed_by_customer}", "keyed on \\(customer_id\\)"),
        "parquet, a file of another schema": (f"parquet:{tmp_path / 'wrong'}", "2025-01-01.parquet has no column"),
        "postgresql, closed port": ("postgresql://postgres@127.0.0.1:1/test", "cannot reach the sink"),
        "sqlite, missing folder": (f"sqlite:///{tmp_path / 'missing' / 'scores.db'}", "does not exist"),
        "sqlite, parent is a file": (f"sqlite:///{a_file / 'scores.db'}", "is not a folder"),
        "parquet, path is a file": (f"parquet:{a_file}", "is a file"),
        "csv, missing parent": (f"csv:{tmp_path / 'missing' / 'scores'}", "does not exist"),
        "unknown scheme": ("mysql://x@localhost/db", "unknown sink"),
    }


def test_an_unusable_sink_fails_before_any_scoring(project: Settings, tmp_path: Path, no_scoring: None) -> None:
    for name, (uri, message) in unusable_sinks(tmp_path).items():
        started = time.perf_counter()
        with pytest.raises(CustlensError, match=message):
            score_customers(project, None, uri)
        # a bound for a hang (a connect without a timeout, a retry loop), not for a slow machine
        assert time.perf_counter() - started < 120, name


def test_the_command_prints_an_unreachable_sink_without_a_traceback(tmp_path: Path, no_scoring: None) -> None:
    result = CliRunner().invoke(app, ["score", "--sink", "postgresql://postgres@127.0.0.1:1/test"])
    assert result.exit_code == 2
    assert "cannot reach the sink postgresql+psycopg://postgres@127.0.0.1:1/test" in result.output
    assert "Traceback" not in result.output


def test_the_command_prints_a_malformed_sink_url_in_one_line(no_scoring: None) -> None:
    result = CliRunner().invoke(app, ["score", "--sink", "postgresql://u@host:notaport/crm"])
    assert result.exit_code == 2
    shown = " ".join(result.output.split())  # as one line: the console wraps it at its width
    assert shown.startswith("error: sink 'postgresql://u@host:notaport/crm' is not a database URL"), shown
    assert shown.count("error:") == 1 and "Traceback" not in shown


def test_an_as_of_without_a_snapshot_lists_the_snapshots(
    project: Settings, cutoffs: tuple[date, date], tmp_path: Path
) -> None:
    with pytest.raises(CustlensError, match=rf"no feature snapshot at 1999-01-01; snapshots exist at .*{cutoffs[1]}"):
        score_customers(project, date(1999, 1, 1), f"sqlite:///{tmp_path / 'scores.db'}")


# ---------------------------------------------------------------------------------------------
# SIGKILL at random moments
#
# Each trial runs the job in a child of a fork server that imported custlens once (a fresh
# `custlens score` spends about 4 s importing Feast and MLflow, which no kill needs to land in),
# and kills it with SIGKILL after a random delay. A real `custlens score` subprocess writes the
# clean result the trials are compared with.

KILL_TRIALS = 10
# Bounds for a hung run, not measures of a slow one: a loaded machine may take minutes.
RUN_BOUND_SECONDS = 600


def command_env(project: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CUSTLENS_")}
    assert project.training.tracking_uri is not None
    env.update({
        "CUSTLENS_DATA_DIR": str(project.data_dir), "CUSTLENS_TRAINING__TRACKING_URI": project.training.tracking_uri,
        "CUSTLENS_BATCH__CHUNK_ROWS": str(CHUNK_ROWS),
    })  # fmt: skip
    return env


def score_in_child(settings: Settings, as_of: date, uri: str) -> None:
    score_customers(settings, as_of, uri)


@pytest.fixture(scope="module")
def fork_server() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["serving.batch", __name__])  # the module of score_in_child
    return context


@pytest.mark.parametrize("kind", ["sqlite", "parquet"])
def test_a_job_killed_at_any_moment_leaves_the_previous_complete_result(
    project: Settings,
    cutoffs: tuple[date, date],
    customers: dict[date, int],
    fork_server: multiprocessing.context.BaseContext,
    kind: str,
    tmp_path: Path,
) -> None:
    earlier, latest = cutoffs
    uri, clean_uri = (
        (f"sqlite:///{tmp_path / 'scores.db'}", f"sqlite:///{tmp_path / 'clean.db'}")
        if kind == "sqlite"
        else (f"parquet:{tmp_path / 'scores'}", f"parquet:{tmp_path / 'clean'}")
    )
    for as_of in (earlier, latest):  # the second run, with the fork server warm, times a run
        started = time.monotonic()
        run = fork_server.Process(target=score_in_child, args=(project, as_of, uri))
        run.start()
        run.join(timeout=RUN_BOUND_SECONDS)
        assert run.exitcode == 0
    duration = time.monotonic() - started  # from start to the expected end of a run

    rng = random.Random(20261125)
    previous = read_sink(uri)
    outcomes = []
    for trial in range(KILL_TRIALS):
        known_runs = frozenset(run_id for run_id, _, _ in manifest(uri))
        process = fork_server.Process(target=score_in_child, args=(project, latest, uri))
        process.start()
        if trial % 2 == 0:
            # Anywhere in the run: stratified over [0, duration] so the trials cover all of it.
            time.sleep(duration * (trial / 2 + rng.random()) / (KILL_TRIALS / 2))
        else:
            # Inside the write: once the new run is recorded as running, before its expected end.
            runs_before = len(known_runs)
            assert wait_for(lambda: len(manifest(uri)) > runs_before, process, RUN_BOUND_SECONDS)  # noqa: B023
            time.sleep(rng.uniform(0.0, duration / 3))
        process.kill()  # SIGKILL
        process.join(timeout=RUN_BOUND_SECONDS)
        assert process.exitcode in (-signal.SIGKILL, 0)

        rows = read_sink(uri)
        runs = {run_id: status for run_id, status, _ in manifest(uri)}
        holding = set(rows.loc[rows["as_of"] == latest, "scoring_run_id"])
        assert len(holding) == 1, f"trial {trial}: rows of several runs at {latest}: {holding}"
        (run_id,) = holding
        assert runs[run_id] == SUCCEEDED
        assert len(rows) == sum(customers.values())
        if run_id in known_runs:
            pd.testing.assert_frame_equal(rows, previous)
            outcomes.append("previous")
        else:  # killed after its commit: the new complete result
            pd.testing.assert_frame_equal(without_run(rows), without_run(previous))
            outcomes.append("new")
        assert all(status in (RUNNING, SUCCEEDED, FAILED) for status in runs.values())
        previous = rows
    assert "previous" in outcomes, outcomes  # some kills landed before the commit

    command = [str(Path(sys.executable).parent / "custlens"), "score", "--as-of", str(latest), "--sink", uri]
    done = subprocess.run(command, env=command_env(project), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for as_of in (earlier, latest):  # a clean run into a new sink
        score_customers(project, as_of, clean_uri)
    pd.testing.assert_frame_equal(without_run(read_sink(uri)), without_run(read_sink(clean_uri)))


def test_kpi_segments_follow_the_scores(project: Settings, cutoffs: tuple[date, date], tmp_path: Path) -> None:
    """A run of every customer rebuilds the KPI cubes by segment from its scores; an earlier as-of
    does not replace those of a later one."""
    import shutil

    from features.kpis import build_kpi_cube, kpis, segment_as_of

    data = tmp_path / "data"
    for folder in ("lake", "features"):
        shutil.copytree(project.data_dir / folder, data / folder)
    settings = project.model_copy(update={
        "data_dir": data, "batch": project.batch.model_copy(update={"kpi_segments": True}),
    })  # fmt: skip
    build_kpi_cube(settings)
    uri = f"sqlite:///{tmp_path / 'scores.db'}"
    latest = score_customers(settings, cutoffs[1], uri)
    assert "rebuilt" in latest.kpi_segments and segment_as_of(settings) == cutoffs[1]
    end = cutoffs[1] - timedelta(days=1)
    table = kpis(settings, end - timedelta(days=89), end, by="segment")
    counts = latest.segment_counts["rfm_segment"]
    assert set(table.groups) - {"(none)"} <= set(counts)
    scored = read_sink(uri)
    expected = scored["predicted_clv"].mean()
    overall = kpis(settings, end - timedelta(days=89), end).get("predicted_clv")
    assert overall.value == pytest.approx(expected, rel=1e-9)
    # each segment's predicted revenue comes with the range of its total, far narrower than the
    # sum of its customers' ranges
    for group in set(table.groups) - {"(none)"}:
        total, low, high = (table.get(kpi, group).value for kpi in
                            ("predicted_revenue", "predicted_revenue_p10", "predicted_revenue_p90"))  # fmt: skip
        members = scored[scored["rfm_segment"] == group]
        assert total == pytest.approx(members["predicted_clv"].sum(), rel=1e-9)
        assert low is not None and high is not None and low < total < high
        if len(members) >= 30:  # one customer's range can be the narrower: P10 = P90 = 0 with a variance
            assert high - low < (members["predicted_clv_p90"] - members["predicted_clv_p10"]).sum()
    earlier = score_customers(settings, cutoffs[0], uri)
    assert "kept those of the later as-of" in earlier.kpi_segments and segment_as_of(settings) == cutoffs[1]


# ---------------------------------------------------------------------------------------------
# A killed run is marked at the next start


def test_a_killed_scoring_run_is_marked_failed_and_killed_at_the_next_start(
    project: Settings, cutoffs: tuple[date, date], tmp_path: Path
) -> None:
    database = tmp_path / "scores.db"
    uri = f"sqlite:///{database}"
    sink = open_sink(uri)
    sink.check()  # the tables, so that the manifest can be watched from the start
    sink.close()

    def running() -> list[str]:  # a cheap look, so as not to slow the job watched on two cores
        with sqlite3.connect(database, timeout=60) as conn:
            return [row[0] for row in conn.execute("SELECT run_id FROM scoring_runs WHERE status = 'running'")]

    command = [str(Path(sys.executable).parent / "custlens"), "score", "--as-of", str(cutoffs[1]), "--sink", uri]
    # given a `custlens score` killed outright while its run is recorded as running (a run that
    # finished before the kill landed is tried again)
    killed_run = None
    for _attempt in range(5):
        process = subprocess.Popen(command, env=command_env(project), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        while process.poll() is None and not (began := running()):
            time.sleep(0.01)
        process.kill()
        process.wait()
        if process.returncode == -signal.SIGKILL and began:
            (killed_run,) = began
            break
    assert killed_run is not None, "every run ended before it was killed"
    tracking_client = connect(project)
    assert tracking_client.get_run(killed_run).info.status == "RUNNING"
    tracking = project.training.tracking_uri
    assert tracking is not None
    # and a run of a process still alive
    with holding("--sink", uri) as alive, holding("--tracking", tracking, "--experiment", "batch-scoring") as tracked:
        # when the next `custlens score` starts
        report = score_customers(project, cutoffs[1], uri)
        runs = {run.run_id: run for run in sink_runs(uri)}
        # then the killed run is failed in the manifest and KILLED in MLflow, saying why
        reason = f"killed: process {process.pid} on {socket.gethostname()} is gone"
        assert (runs[killed_run].status, runs[killed_run].error) == (FAILED, reason)
        assert tracking_client.get_run(killed_run).info.status == "KILLED"
        assert reason in _rendered(report)
        # and the live process's runs are left as they are
        assert runs[alive.run_id].status == RUNNING
        assert tracking_client.get_run(tracked.run_id).info.status == "RUNNING"
    assert runs[report.run_id].status == SUCCEEDED
