"""Nightly batch scoring (`custlens score`): every customer of a feature snapshot, or the listed
ones, scored by the same Scorer as the online service and written to a sink in one atomic swap;
then a summary, the segment migration since the previous as-of date, the drift (PSI) of each
score since the previous run, and an MLflow run in the `custlens-batch-scoring` experiment."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from rich.console import Console, Group, RenderableType
from rich.table import Table

from custlens.errors import CustlensError
from custlens.progress import chunks
from custlens.runs import RunOwner
from custlens.settings import Settings
from features.asof import resolve_snapshot
from features.lake.tables import CrmIds, cutoff_instant
from features.snapshot_reader import PackedSnapshot, load_packed_snapshot, snapshot_cutoffs, snapshot_features_frame
from serving.scorer import MODELS, Scorer
from serving.sinks import (
    FAILED,
    MODEL_VERSION_COLUMNS,
    RUNNING,
    SCORES_SCHEMA,
    SUCCEEDED,
    Migration,
    RunEntry,
    Sink,
    open_sink,
)
from training.tracking import connect, end_killed_runs, start_run, use_experiment

EXPERIMENT = "batch-scoring"  # -> custlens-batch-scoring
SEGMENT_COLUMNS = ("rfm_segment", "behavioural_segment")
# Scores whose distribution is compared with the previous run's (PSI over its deciles).
DRIFT_SCORES = ("churn_probability", "repurchase_probability", "predicted_clv", "expected_days_to_next_order")
PSI_BINS = 10
_PSI_FLOOR = 1e-4  # an empty bin counts as this share, so PSI stays finite


@dataclass(frozen=True)
class BatchReport:
    run_id: str
    as_of: date
    sink: str
    rows: int
    seconds: float
    versions: dict[str, str | None]  # None: no version to serve (its outputs are NULL)
    not_found: list[str]  # listed ids the snapshot and the CRM crosswalk do not know
    segment_counts: dict[str, dict[str, int]]
    migrations: list[Migration]  # empty when the sink held no earlier as-of date
    previous_run_id: str | None
    psi: dict[str, float]  # empty when there was no previous run
    psi_warning: float
    kpi_segments: str = ""  # what became of the KPI cubes by segment
    killed_runs: tuple[str, ...] = ()  # runs a killed process had left running, marked at the start
    as_of_why: str = ""  # which as-of was scored and why (features/asof.py)
    unserved: dict[str, str] = field(default_factory=dict)  # models with no version to serve, and why
    # days after the as-of each output is over, as its model was trained (Scorer.windows), and a
    # note for each version that records none (its window is today's config's)
    windows: dict[str, int | None] = field(default_factory=dict)
    window_notes: tuple[str, ...] = ()
    risk_thresholds: dict[str, Any] = field(default_factory=dict)  # Scorer.risk_thresholds: medium, high, basis

    def drifted(self) -> list[str]:
        return [score for score, value in self.psi.items() if value > self.psi_warning]

    def render(self) -> RenderableType:
        parts: list[RenderableType] = [
            f"[bold]custlens score[/]: {self.rows:,} customers at as-of {self.as_of} scored in {self.seconds:.1f} s "
            f"({self.rows / max(self.seconds, 1e-9):,.0f}/s) and written to {self.sink}",
            "model versions: " + ", ".join(f"{model} v{version}" for model, version in self.versions.items()
                                           if version is not None)
            + f"; scoring run {self.run_id}",
            "windows (days after the as-of date, as each model was trained): "
            + ", ".join(f"{key.removesuffix('_days')} {'-' if d is None else d}" for key, d in self.windows.items()),
        ]  # fmt: skip
        if self.risk_thresholds and self.versions.get("churn"):
            bands = self.risk_thresholds
            parts.append(f"churn risk: medium from {bands['medium']:.3f}, high from {bands['high']:.3f} "
                         f"({bands['basis']})")  # fmt: skip
        if self.as_of_why:
            parts.append(self.as_of_why)
        parts.extend(f"[yellow]{model}: {why}; its outputs are NULL[/]" for model, why in self.unserved.items())
        parts.extend(f"[yellow]{note}[/]" for note in self.window_notes)
        parts.extend(f"[yellow]{killed}[/]" for killed in self.killed_runs)
        if self.not_found:
            shown = ", ".join(self.not_found[:5]) + (" ..." if len(self.not_found) > 5 else "")
            parts.append(f"[yellow]{len(self.not_found):,} listed ids are unknown at {self.as_of}, skipped:[/] {shown}")
        for column, counts in self.segment_counts.items():
            parts.append(_counts_table(column, counts, self.as_of))
        for migration in self.migrations:
            parts.append(_migration_table(migration))
        if not self.migrations:
            parts.append("segment migration: no earlier as-of date in the sink to compare with")
        if self.psi:
            parts.append(_psi_table(self.psi, self.psi_warning, self.previous_run_id))
            for score in self.drifted():
                parts.append(
                    f"[bold yellow]warning:[/] {score} moved since run {self.previous_run_id}: "
                    f"PSI {self.psi[score]:.3f} > {self.psi_warning} (batch.psi_warning)"
                )
        else:
            parts.append("score drift: no previous run of every customer in the sink to compare with")
        if self.kpi_segments:
            parts.append(self.kpi_segments)
        return Group(*parts)


def score_customers(
    settings: Settings,
    as_of: date | None = None,
    sink_uri: str | None = None,
    customers_file: Path | None = None,
    console: Console | None = None,
) -> BatchReport:
    """Score the snapshot at `as_of` (default: the live as-of, features/asof.py) and write it to the sink (default:
    `settings.scores_sink`). Checks the sink, the date and the id list before any scoring, and
    marks the runs a killed process left running (in the sink's manifest and in MLflow)."""
    started = time.perf_counter()
    sink = open_sink(sink_uri or settings.scores_sink, create_folder=sink_uri is None and settings.batch.sink is None)
    try:
        sink.check()
        killed = [f"scoring run {run.run_id} marked failed: {run.error}" for run in sink.fail_killed_runs()]
        killed += end_killed_runs(settings)
        cutoff, why = _snapshot_date(settings, as_of)
        listed = _read_ids(customers_file) if customers_file is not None else None
        scorer = Scorer.from_registry(settings)
        snapshot = load_packed_snapshot(settings, cutoff)
        crosswalk = CrmIds.read(settings)
        not_found: list[str] = []
        if listed is not None:
            snapshot, not_found = _listed(snapshot, listed, crosswalk)
        segments: list[pd.DataFrame] | None = [] if listed is None and settings.batch.kpi_segments else None
        report = _run(settings, sink, scorer, snapshot, crosswalk, listed is not None, not_found, started, console,
                      segments)  # fmt: skip
    finally:
        sink.close()
    report = replace(report, killed_runs=tuple(killed), as_of_why=why)
    if segments is not None:
        report = replace(report, kpi_segments=_kpi_segments(settings, segments, report.as_of))
    return report


def _kpi_segments(settings: Settings, segments: list[pd.DataFrame], as_of: date) -> str:
    """Rebuild the KPI cubes by segment from this run (`custlens kpis --by segment`), unless they
    come from a later as-of date already. The scores are committed by then: a failure here is
    reported, and the CRM's scores stand."""
    from features.kpis import build_segment_cubes, segment_as_of

    current = segment_as_of(settings)
    if current is not None and current > as_of:
        return f"KPIs by segment: kept those of the later as-of {current} (this run is as of {as_of})"
    started = time.perf_counter()
    try:
        build_segment_cubes(settings, pd.concat(segments, ignore_index=True), as_of)
    except CustlensError as exc:
        return f"[yellow]KPIs by segment not rebuilt:[/] {exc}"
    return f"KPIs by segment (custlens kpis --by segment|behaviour) rebuilt in {time.perf_counter() - started:.1f} s"


def _run(
    settings: Settings,
    sink: Sink,
    scorer: Scorer,
    snapshot: PackedSnapshot,
    crosswalk: CrmIds,
    listed: bool,
    not_found: list[str],
    started: float,
    console: Console | None,
    segments: list[pd.DataFrame] | None = None,
) -> BatchReport:
    """Score and write in chunks; append each chunk's segments and predicted value to `segments`
    when given (the KPI cubes by segment are built from them)."""
    as_of = snapshot.cutoff
    versions = {model: scorer.versions[model] for model in MODELS}
    previous = sink.previous_run(scope="all")
    crm_ids = crosswalk.for_customers(snapshot.customer_ids)

    connect(settings)
    use_experiment(settings, EXPERIMENT)
    mlflow_run = start_run(f"score {as_of}")
    run_id = mlflow_run.info.run_id or uuid.uuid4().hex
    owner = RunOwner.here()
    entry = RunEntry(
        run_id=run_id, as_of=as_of, status=RUNNING, scope="listed" if listed else "all", started_at=datetime.now(UTC),
        churn_model_version=versions["churn"], repurchase_model_version=versions["repurchase"],
        clv_model_version=versions["clv"], segments_model_version=versions["segments"], host=owner.host, pid=owner.pid,
        windows=json.dumps(scorer.windows),
    )  # fmt: skip
    try:
        sink.begin(entry)
        request_time = cutoff_instant(as_of)
        drift: dict[str, list[np.ndarray]] = {score: [] for score in DRIFT_SCORES}
        for rows in chunks(console, "scoring", len(snapshot), settings.batch.chunk_rows):
            features = snapshot_features_frame(snapshot, scorer.inputs, request_time, rows)
            scores = scorer.score(features, as_of, clv_variance=segments is not None)
            sink.write(_scores_table(scores, crm_ids[rows], as_of, versions, run_id))
            if segments is not None:  # with each customer's variance: a segment total's range
                segments.append(scores[["customer_id", *SEGMENT_COLUMNS, "predicted_clv", "predicted_clv_variance"]])
            for score in DRIFT_SCORES:
                drift[score].append(scores[score].to_numpy(dtype="float64"))
        values = {score: np.concatenate(parts) if parts else np.empty(0) for score, parts in drift.items()}
        # A listed subset is not the population: its drift against a whole run would mean nothing.
        previous_bins = previous.bins() if previous is not None and not listed else {}
        psi = {score: population_stability(previous_bins[score], values[score])
               for score in DRIFT_SCORES if previous_bins.get(score)}  # fmt: skip
        bins = {score: decile_bins(values[score]) for score in DRIFT_SCORES}
        entry = replace(
            entry, status=SUCCEEDED, rows=len(snapshot), finished_at=datetime.now(UTC),
            seconds=time.perf_counter() - started, score_bins=json.dumps(bins), psi=json.dumps(psi),
        )  # fmt: skip
        sink.commit(entry)
    except BaseException as exc:
        sink.abort(replace(entry, status=FAILED, finished_at=datetime.now(UTC), error=str(exc)[:1000]))
        mlflow.end_run("FAILED")
        raise

    previous_as_of = sink.previous_as_of(as_of)
    migrations = [sink.migration(column, previous_as_of, as_of) for column in SEGMENT_COLUMNS] if previous_as_of else []
    report = BatchReport(
        run_id=run_id, as_of=as_of, sink=sink.uri, rows=len(snapshot), seconds=time.perf_counter() - started,
        versions=versions, not_found=not_found,
        segment_counts={column: sink.segment_counts(column, as_of) for column in SEGMENT_COLUMNS},
        migrations=migrations, previous_run_id=previous.run_id if previous else None, psi=psi,
        psi_warning=settings.batch.psi_warning, windows=scorer.windows, window_notes=tuple(scorer.window_notes()),
        risk_thresholds=scorer.risk_thresholds,
        unserved=scorer.unserved,
    )  # fmt: skip
    _log_run(report, entry)
    return report


# ---------------------------------------------------------------------------------------------
# What to score


def _snapshot_date(settings: Settings, as_of: date | None) -> tuple[date, str]:
    """The snapshot to score (default: the live as-of) and the line saying why."""
    return resolve_snapshot(settings, as_of, snapshot_cutoffs(settings))


def _read_ids(path: Path) -> list[str]:
    """One id a line (unified or the CRM's own); blank lines, `#` comments and a header skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CustlensError(f"cannot read the customer list {path}: {exc.strerror}") from None
    ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if ids and ids[0] in ("customer_id", "crm_customer_id"):
        ids = ids[1:]
    if not ids:
        raise CustlensError(f"the customer list {path} holds no ids; write one customer id a line")
    return list(dict.fromkeys(ids))


def _listed(snapshot: PackedSnapshot, ids: Sequence[str], crosswalk: CrmIds) -> tuple[PackedSnapshot, list[str]]:
    """The snapshot rows of the listed ids, in list order; CRM ids are translated first."""
    position = {customer_id: i for i, customer_id in enumerate(snapshot.customer_ids)}
    from_crm = crosswalk.customers_of([i for i in ids if i not in position])
    picked, not_found = [], []
    for listed in ids:
        found = position.get(listed)
        if found is None and listed in from_crm:
            found = position.get(from_crm[listed])
        if found is None:
            not_found.append(listed)
        else:
            picked.append(found)
    if not picked:
        raise CustlensError(
            f"none of the {len(ids):,} listed ids has features at {snapshot.cutoff} (first: {ids[0]}); "
            "list unified customer ids or the CRM's own ids"
        )
    return snapshot.take(np.asarray(list(dict.fromkeys(picked)), dtype="int64")), not_found


# ---------------------------------------------------------------------------------------------
# Rows, drift, progress


def _scores_table(
    scores: pd.DataFrame, crm_ids: pa.Array, as_of: date, versions: dict[str, str | None], run_id: str
) -> pa.Table:
    count = len(scores)

    def constant(value: Any, kind: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, kind), count)

    columns: dict[str, Any] = {"customer_id": scores["customer_id"], "crm_customer_id": crm_ids,
                               "as_of": constant(as_of, pa.date32())}  # fmt: skip
    for name in SCORES_SCHEMA.names[3:]:
        if name in scores.columns:
            columns[name] = scores[name]
    for model, name in zip(MODELS, MODEL_VERSION_COLUMNS, strict=True):
        columns[name] = constant(versions[model], pa.string())
    columns["scoring_run_id"] = constant(run_id, pa.string())
    arrays = [
        value if isinstance(value, pa.Array) else pa.array(value.to_numpy(), field.type, from_pandas=True)
        for field, value in zip(SCORES_SCHEMA, (columns[name] for name in SCORES_SCHEMA.names), strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=SCORES_SCHEMA)


def decile_bins(values: np.ndarray) -> dict[str, list[float]] | None:
    """A score's deciles (inner edges) and the share of values in each bin; None without values."""
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1]))
    return {"edges": edges.tolist(), "shares": _shares(edges, values).tolist()}


def population_stability(previous: dict[str, list[float]], values: np.ndarray) -> float:
    """PSI of `values` against the previous run's bins: sum of (now - then) * ln(now / then)."""
    values = values[~np.isnan(values)]
    expected = np.maximum(np.asarray(previous["shares"], dtype="float64"), _PSI_FLOOR)
    actual = np.maximum(_shares(np.asarray(previous["edges"], dtype="float64"), values), _PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _shares(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


# ---------------------------------------------------------------------------------------------
# Summary and MLflow


def _log_run(report: BatchReport, entry: RunEntry) -> None:
    try:
        _log_figures(report, entry)
    finally:
        mlflow.end_run("FINISHED")  # the scores are in the sink whatever happens to the figures


def _log_figures(report: BatchReport, entry: RunEntry) -> None:
    mlflow.log_params({
        "as_of": str(report.as_of), "sink": report.sink, "scope": entry.scope,
        **{f"{model}_version": version for model, version in report.versions.items()},
        **{f"windows.{key}": days for key, days in report.windows.items()},
        **{f"churn_risk.{key}": value for key, value in report.risk_thresholds.items()},
    })  # fmt: skip
    mlflow.log_metrics({
        "rows": report.rows, "seconds": report.seconds, "rows_per_second": report.rows / max(report.seconds, 1e-9),
        "listed_not_found": len(report.not_found), **{f"psi_{score}": value for score, value in report.psi.items()},
    })  # fmt: skip
    mlflow.set_tags({
        "previous_run_id": report.previous_run_id or "", "psi_warning": ", ".join(report.drifted()),
        "previous_as_of": str(report.migrations[0].previous_as_of) if report.migrations else "",
    })  # fmt: skip
    mlflow.log_dict(report.segment_counts, "segment_counts.json")
    for migration in report.migrations:
        mlflow.log_text(migration.matrix().to_csv(), f"migration_{migration.column}.csv")


def _counts_table(column: str, counts: dict[str, int], as_of: date) -> Table:
    table = Table(title=f"{column} at {as_of}", title_justify="left")
    table.add_column("segment")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    total = max(sum(counts.values()), 1)
    for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(name, f"{count:,}", f"{count / total:.1%}")
    return table


def _migration_table(migration: Migration) -> Table:
    matrix = migration.matrix()
    table = Table(
        title=f"{migration.column}: from {migration.previous_as_of} (rows) to {migration.as_of} (columns)",
        title_justify="left",
    )
    table.add_column("from \\ to")
    for name in matrix.columns:
        table.add_column(str(name), justify="right")
    for name, row in matrix.iterrows():
        cells = [f"[bold]{v:,}[/]" if current == name else f"{v:,}" for current, v in row.items()]
        table.add_row(str(name), *cells)
    return table


def _psi_table(psi: dict[str, float], warning: float, previous_run_id: str | None) -> Table:
    table = Table(title=f"score drift against run {previous_run_id} (PSI)", title_justify="left")
    table.add_column("score")
    table.add_column("PSI", justify="right")
    for score, value in psi.items():
        table.add_row(score, f"[bold yellow]{value:.3f}[/]" if value > warning else f"{value:.3f}")
    return table
