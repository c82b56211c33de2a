"""Where batch scores go: the `customer_scores` table and the `scoring_runs` manifest, in a SQL
database (SQLite, PostgreSQL) or as Parquet/CSV files, written so that a reader sees either the
previous complete result or the new one, never a mix.

- SQL: a run's rows go to a temporary staging table (private to the run's connection, gone if the
  run dies); one transaction then deletes what they replace, copies them in and marks the run
  succeeded in the manifest.
- Files: `PATH/customer_scores/<as-of>.parquet|csv`, one file per as-of date, written under a
  hidden temporary name and renamed over the old file; `PATH/scoring_runs.parquet|csv` is the
  manifest, replaced the same way. A folder of these files reads as one table
  (`pyarrow.parquet.read_table(PATH / "customer_scores")`).

`check` tries the whole sink before any scoring: the URL, each table's columns, types and key (or
each existing file's), and a write of every kind a run makes, rolled back (SQL) or removed (files).

Columns added since the first release (ADDED_SCORE_COLUMNS, ADDED_MANIFEST_COLUMNS) reach sinks
that were written before them: a SQL table gets them by ALTER TABLE ... ADD COLUMN at `check`, an
older file reads them as NULL. Columns renamed since (RENAMED_SCORE_COLUMNS) are renamed in a SQL
table at `check`, in the same transaction, and read under today's names from an older file. Money
is `predicted_clv` and its P10-P90 range (`predicted_clv_p10`, `predicted_clv_p90`) in `currency`
(the lake's business currency, ISO 4217; NULL for a lake that never recorded one), rounded to the
currency's minor units. The windows the scores are over (days after
the as-of date) are each run's `windows` in the manifest, not part of the column names.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from custlens.errors import CustlensError
from custlens.runs import RunOwner
from features.lake.tables import atomic_file, fsync_file

SCORES_TABLE = "customer_scores"
MANIFEST_TABLE = "scoring_runs"
STAGING_TABLE = "customer_scores_staging"
MODEL_VERSION_COLUMNS = ("churn_model_version", "repurchase_model_version", "clv_model_version",
                         "segments_model_version")  # fmt: skip

# One row per customer and as-of date; the Arrow schema every sink writes.
SCORES_SCHEMA = pa.schema([
    pa.field("customer_id", pa.string(), nullable=False),
    pa.field("crm_customer_id", pa.string()),
    pa.field("as_of", pa.date32(), nullable=False),
    pa.field("churn_probability", pa.float64()),
    pa.field("churn_risk", pa.string()),
    pa.field("churn_not_scored_reason", pa.string()),  # why churn is NULL: no_purchase_yet, inactive_beyond_window
    pa.field("repurchase_probability", pa.float64()),
    pa.field("expected_next_order_date", pa.date32()),
    pa.field("predicted_clv", pa.float64()),
    pa.field("predicted_clv_p10", pa.float64()),  # its P10-P90 range; NULL from a version without one
    pa.field("predicted_clv_p90", pa.float64()),
    pa.field("currency", pa.string()),  # of predicted_clv and its range
    pa.field("rfm_segment", pa.string()),
    pa.field("behavioural_segment", pa.string()),
    *(pa.field(name, pa.string()) for name in MODEL_VERSION_COLUMNS),
    pa.field("scoring_run_id", pa.string(), nullable=False),
])  # fmt: skip
SCORE_COLUMNS = tuple(SCORES_SCHEMA.names)
# Nullable columns an older sink may lack: added to its table, or read as NULL from its files.
ADDED_SCORE_COLUMNS = ("currency", "churn_not_scored_reason", "predicted_clv_p10", "predicted_clv_p90")
assert all(SCORES_SCHEMA.field(name).nullable for name in ADDED_SCORE_COLUMNS)
# Older names -> today's: the names used to state the default windows, which are configurable
# (the windows a run's models were trained with are its manifest's `windows`).
RENAMED_SCORE_COLUMNS = {"repurchase_probability_30d": "repurchase_probability", "predicted_clv_12m": "predicted_clv"}
assert set(RENAMED_SCORE_COLUMNS.values()) <= set(SCORES_SCHEMA.names)

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


@dataclass(frozen=True)
class RunEntry:
    """One row of the manifest: a scoring run, from `running` to `succeeded` (or `failed`).

    A run killed outright stays `running` (it never got to say otherwise, and its rows never
    reached `customer_scores`) until the next run starts and finds its process gone
    (`Sink.fail_killed_runs`): `host` and `pid` say which process ran it (NULL in runs from before
    they were recorded). `score_bins` holds each score's deciles and shares (JSON), what the next
    run measures drift (PSI) against; `psi` the drift measured against the run before. `windows`
    (JSON: churn_days, repurchase_days, clv_days) says how many days after the as-of date churn, the
    repurchase probability and the predicted value are over, as the run's models were trained (NULL
    in runs from before it was recorded: those columns were named for the default windows then).
    """

    run_id: str
    as_of: date
    status: str
    scope: str  # "all" customers of the snapshot, or "listed" ones (only those rows are replaced)
    started_at: datetime
    churn_model_version: str | None  # None: no version to serve, its outputs NULL
    repurchase_model_version: str | None
    clv_model_version: str | None
    segments_model_version: str | None
    rows: int | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    score_bins: str | None = None
    psi: str | None = None
    error: str | None = None
    host: str | None = None
    pid: int | None = None
    windows: str | None = None

    def bins(self) -> dict[str, Any]:
        """Each score's bins, by today's name (a run from before a rename keyed them by the older)."""
        bins = json.loads(self.score_bins) if self.score_bins else {}
        return {RENAMED_SCORE_COLUMNS.get(score, score): value for score, value in bins.items()}

    def window_days(self) -> dict[str, int | None]:
        """{"churn_days", "repurchase_days", "clv_days"}; empty for a run from before they were recorded."""
        return dict(json.loads(self.windows)) if self.windows else {}


MANIFEST_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("as_of", pa.date32(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("scope", pa.string(), nullable=False),
    pa.field("started_at", pa.timestamp("us", "UTC"), nullable=False),
    *(pa.field(name, pa.string()) for name in MODEL_VERSION_COLUMNS),
    pa.field("rows", pa.int64()),
    pa.field("finished_at", pa.timestamp("us", "UTC")),
    pa.field("seconds", pa.float64()),
    pa.field("score_bins", pa.string()),
    pa.field("psi", pa.string()),
    pa.field("error", pa.string()),
    pa.field("host", pa.string()),
    pa.field("pid", pa.int64()),
    pa.field("windows", pa.string()),
])  # fmt: skip
assert tuple(MANIFEST_SCHEMA.names) == tuple(f.name for f in fields(RunEntry))
ADDED_MANIFEST_COLUMNS = ("host", "pid", "windows")
assert all(MANIFEST_SCHEMA.field(name).nullable for name in ADDED_MANIFEST_COLUMNS)


@dataclass(frozen=True)
class Migration:
    """Customers per (segment at the previous as-of, segment now); "(none)" when a customer had no
    score at the previous as-of."""

    column: str
    previous_as_of: date
    as_of: date
    counts: pd.DataFrame = field(repr=False)  # columns: previous, current, customers

    def matrix(self) -> pd.DataFrame:
        return self.counts.pivot_table(
            index="previous", columns="current", values="customers", aggfunc="sum", fill_value=0
        ).astype("int64")


NEW_CUSTOMER = "(none)"


class Sink(ABC):
    """A place that holds `customer_scores` and the manifest of scoring runs."""

    uri: str  # as shown to people: no password

    @abstractmethod
    def check(self) -> None:
        """Raise a CustlensError unless the sink can be reached, holds what custlens writes and takes
        every write a run makes (creates its tables, adds columns added since)."""

    @abstractmethod
    def runs(self) -> list[RunEntry]:
        """The manifest, oldest start first."""

    @abstractmethod
    def as_of_dates(self) -> list[date]:
        """As-of dates holding scores, oldest first."""

    @abstractmethod
    def scores(self, as_of: date | None = None) -> pd.DataFrame:
        """The scores of one as-of date (default: all), ordered by as_of and customer_id."""

    @abstractmethod
    def segment_counts(self, column: str, as_of: date) -> dict[str, int]:
        """Customers per segment of `column` at `as_of`."""

    @abstractmethod
    def migration(self, column: str, previous_as_of: date, as_of: date) -> Migration: ...

    @abstractmethod
    def begin(self, entry: RunEntry) -> None:
        """Record the run as running and open its staging area."""

    @abstractmethod
    def write(self, chunk: pa.Table) -> None:
        """Stage a chunk of rows (SCORES_SCHEMA); nothing is visible to readers yet."""

    @abstractmethod
    def commit(self, entry: RunEntry) -> None:
        """Swap the staged rows in and mark the run succeeded, atomically: for a run of all
        customers, every row of its as-of date is replaced; for listed ones, only theirs."""

    @abstractmethod
    def abort(self, entry: RunEntry) -> None:
        """Drop the staged rows; the run is recorded as failed where the sink still answers."""

    @abstractmethod
    def _mark_failed(self, entries: Sequence[RunEntry]) -> None:
        """Record these runs, still `running` in the manifest, as they are now (failed)."""

    def fail_killed_runs(self) -> list[RunEntry]:
        """Mark `failed` each run left `running` by a process of this host that is gone; the runs
        marked. Runs of other hosts, of live processes and of no recorded process stay as they are."""
        killed = []
        for run in self.runs():
            if run.status != RUNNING or run.host is None or run.pid is None:
                continue
            owner = RunOwner(run.host, run.pid)
            if owner.is_gone(run.started_at):
                killed.append(replace(run, status=FAILED, error=owner.killed_reason()))
        if killed:
            self._mark_failed(killed)
        return killed

    def previous_run(self, scope: str | None = None) -> RunEntry | None:
        """The last run that succeeded (of this scope: "all" or "listed", when given)."""
        succeeded = [run for run in self.runs() if run.status == SUCCEEDED and scope in (None, run.scope)]
        return succeeded[-1] if succeeded else None

    def previous_as_of(self, as_of: date) -> date | None:
        earlier = [day for day in self.as_of_dates() if day < as_of]
        return earlier[-1] if earlier else None

    def close(self) -> None:  # noqa: B027 - a sink without connections has nothing to close
        pass


def open_sink(uri: str, create_folder: bool = False) -> Sink:
    """The sink a URI names: sqlite:///path.db, postgresql://..., parquet:PATH or csv:PATH.

    `create_folder`: create a missing folder of a SQLite file (the default sink's, say); an explicit
    path must exist, so a typo is an error rather than a new database somewhere unexpected.
    """
    if uri.startswith("parquet:") or uri.startswith("csv:"):
        kind, _, path = uri.partition(":")
        if not path:
            raise CustlensError(f"sink {uri!r} names no folder; write {kind}:PATH")
        return FileSink(Path(path), kind)
    if uri.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        return SqlSink(uri, create_folder)
    raise CustlensError(
        f"unknown sink {uri!r}; use sqlite:///path.db, postgresql://user@host:5432/db, parquet:PATH or csv:PATH"
    )


# ---------------------------------------------------------------------------------------------
# SQL: SQLite and PostgreSQL through SQLAlchemy

_METADATA = sa.MetaData()

_SQL_TYPES: dict[pa.DataType, Any] = {
    pa.string(): sa.Text(),
    pa.date32(): sa.Date(),
    pa.float64(): sa.Float(precision=53),
    pa.int64(): sa.BigInteger(),
    pa.timestamp("us", "UTC"): sa.DateTime(timezone=True),
}


def _sql_columns(schema: pa.Schema, primary_key: Sequence[str] = ()) -> list[sa.Column[Any]]:
    return [
        sa.Column(f.name, _SQL_TYPES[f.type], nullable=f.nullable or f.name not in primary_key,
                  primary_key=f.name in primary_key)
        for f in schema
    ]  # fmt: skip


SCORES = sa.Table(SCORES_TABLE, _METADATA, *_sql_columns(SCORES_SCHEMA, ("as_of", "customer_id")))
MANIFEST = sa.Table(MANIFEST_TABLE, _METADATA, *_sql_columns(MANIFEST_SCHEMA, ("run_id",)))
# Per connection and gone with it: a run that dies leaves nothing behind.
STAGING = sa.Table(STAGING_TABLE, sa.MetaData(), *_sql_columns(SCORES_SCHEMA), prefixes=["TEMPORARY"])


# What a reader of each column gets back, by the Arrow type custlens writes: a table whose column
# gives another Python type (TEXT for a number, TIMESTAMP for a date, NUMERIC's decimals) is refused.
_PYTHON_TYPES: dict[pa.DataType, tuple[type, str]] = {
    pa.string(): (str, "text"),
    pa.date32(): (date, "a date"),
    pa.float64(): (float, "a floating-point number"),
    pa.int64(): (int, "an integer"),
    pa.timestamp("us", "UTC"): (datetime, "a timestamp"),
}
# The rows the check writes and rolls back: a date no run is ever of.
_PROBE_DAY = date(1900, 1, 1)
_PROBE_VALUES: dict[pa.DataType, Any] = {pa.string(): "write-probe", pa.date32(): _PROBE_DAY, pa.float64(): 0.5}
_PERMISSION_DENIED = "42501"  # PostgreSQL's SQLSTATE insufficient_privilege
_GRANTS = (
    f"grant the sink's user SELECT, INSERT, DELETE on {SCORES_TABLE}, SELECT, INSERT, UPDATE on "
    f"{MANIFEST_TABLE} and TEMPORARY on the database (and CREATE on the schema while the tables do not exist)"
)


class SqlSink(Sink):
    def __init__(self, uri: str, create_folder: bool = False) -> None:
        try:
            url = make_url(uri)
        except (ArgumentError, ValueError) as exc:
            why = "its port is not a number" if "int()" in str(exc) else str(exc)
            raise CustlensError(
                f"sink {_without_password(uri)!r} is not a database URL: {why}; write "
                "postgresql://user@host:5432/db or sqlite:///path.db"
            ) from None
        if url.port is not None and not 0 < url.port < 65536:
            raise CustlensError(
                f"sink {_without_password(uri)!r} is not a database URL: port {url.port} is not in 1-65535"
            )
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3, not the default psycopg2
        self.url = url
        self.uri = url.render_as_string(hide_password=True)
        self.dialect = url.get_backend_name()
        self.create_folder = create_folder
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._scope = "all"

    # -- connecting

    def _connect(self) -> Connection:
        if self._conn is not None:
            return self._conn
        if self.dialect not in ("sqlite", "postgresql"):
            raise CustlensError(f"sink {self.uri}: only SQLite and PostgreSQL databases are supported")
        if self.dialect == "sqlite":
            self._check_sqlite_path()
        try:
            timeout = {"timeout": 60} if self.dialect == "sqlite" else {"connect_timeout": 10}
            engine = sa.create_engine(self.url, connect_args=timeout)
        except (ArgumentError, ImportError) as exc:  # NoSuchModuleError is an ArgumentError
            raise CustlensError(
                f"sink {self.uri}: no driver {self.url.drivername} here ({_first_line(exc)}); write "
                "postgresql://... (psycopg) or sqlite:///..."
            ) from None
        if self.dialect == "sqlite":
            _sqlite_transactions(engine)
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            engine.dispose()
            raise CustlensError(
                f"cannot reach the sink {self.uri}: {_first_line(exc)}; check the server, the address "
                "and the credentials, or choose another --sink"
            ) from None
        self._engine, self._conn = engine, conn
        return conn

    def _check_sqlite_path(self) -> None:
        database = self.url.database
        if not database or database == ":memory:":
            raise CustlensError(f"sink {self.uri}: an in-memory SQLite database would be lost; name a file")
        folder = Path(database).resolve().parent
        if self.create_folder and not folder.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CustlensError(f"sink {self.uri}: cannot create folder {folder}: {exc.strerror}") from None
        if not folder.is_dir():
            raise CustlensError(
                f"sink {self.uri}: folder {folder} does not exist or is not a folder; create it or choose another path"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CustlensError(f"sink {self.uri}: folder {folder} is not writable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._engine is not None:
            self._engine.dispose()
        self._conn = self._engine = None

    def check(self) -> None:
        """The tables (made if missing) checked against what custlens writes, columns renamed since
        renamed and columns added since added, then one run's every statement on one probe row,
        rolled back to a savepoint: what needs a privilege the sink's user lacks fails here. Nothing
        changes unless all of it passes."""
        conn = self._connect()
        with self._database_errors("cannot write to the sink"), conn.begin():
            _METADATA.create_all(conn)
            _check_table(conn, SCORES, SCORES_SCHEMA, ADDED_SCORE_COLUMNS, self.uri, RENAMED_SCORE_COLUMNS)
            _check_table(conn, MANIFEST, MANIFEST_SCHEMA, ADDED_MANIFEST_COLUMNS, self.uri)
            with conn.begin_nested() as probe:
                self._probe(conn)
                probe.rollback()

    def _probe(self, conn: Connection) -> None:
        """What begin, write and commit do, on one row of a date no run is of."""
        run_id = f"write-probe-{uuid.uuid4().hex}"
        owner = RunOwner.here()
        entry = RunEntry(
            run_id=run_id, as_of=_PROBE_DAY, status=RUNNING, scope="listed", started_at=datetime.now(UTC),
            churn_model_version="0", repurchase_model_version="0", clv_model_version="0", segments_model_version="0",
            host=owner.host, pid=owner.pid,
        )  # fmt: skip
        row = {f.name: [run_id if f.name in ("customer_id", "scoring_run_id") else _PROBE_VALUES[f.type]]
               for f in SCORES_SCHEMA}  # fmt: skip
        STAGING.drop(conn, checkfirst=True)
        STAGING.create(conn)
        conn.execute(sa.insert(MANIFEST).values(**_manifest_values(entry)))
        self._stage(conn, pa.Table.from_pydict(row, schema=SCORES_SCHEMA))
        done = replace(entry, status=SUCCEEDED, rows=1, finished_at=datetime.now(UTC), seconds=0.0, score_bins="{}",
                       psi="{}")  # fmt: skip
        self._swap(conn, done, scope="listed")

    @contextlib.contextmanager
    def _database_errors(self, doing: str) -> Iterator[None]:
        """A database's refusal as one CustlensError line (with the grants to give for a permission);
        the driver's own errors too (COPY goes around SQLAlchemy)."""
        assert self._engine is not None
        try:
            yield
        except (SQLAlchemyError, self._engine.dialect.loaded_dbapi.Error) as exc:
            original = getattr(exc, "orig", None) or exc
            hint = f"; {_GRANTS}" if getattr(original, "sqlstate", None) == _PERMISSION_DENIED else ""
            raise CustlensError(f"{doing} {self.uri}: {_first_line(exc)}{hint}") from None

    # -- reading

    def _all(self, query: sa.Executable) -> list[Any]:
        """The rows of a query, its read transaction ended at once (no snapshot held open)."""
        conn = self._connect()
        try:
            return list(conn.execute(query).all())
        finally:
            conn.rollback()

    def runs(self) -> list[RunEntry]:
        rows = self._all(sa.select(MANIFEST).order_by(MANIFEST.c.started_at, MANIFEST.c.run_id))
        entries = [RunEntry(**row._asdict()) for row in rows]
        return [replace(e, started_at=_utc(e.started_at) or e.started_at, finished_at=_utc(e.finished_at))
                for e in entries]  # fmt: skip

    def as_of_dates(self) -> list[date]:
        query = sa.select(SCORES.c.as_of).distinct().order_by(SCORES.c.as_of)
        return [row[0] for row in self._all(query)]

    def previous_as_of(self, as_of: date) -> date | None:
        found = self._all(sa.select(sa.func.max(SCORES.c.as_of)).where(SCORES.c.as_of < as_of))
        return found[0][0] if found else None

    def scores(self, as_of: date | None = None) -> pd.DataFrame:
        query = sa.select(SCORES).order_by(SCORES.c.as_of, SCORES.c.customer_id)
        if as_of is not None:
            query = query.where(SCORES.c.as_of == as_of)
        return pd.DataFrame(self._all(query), columns=list(SCORE_COLUMNS))

    def segment_counts(self, column: str, as_of: date) -> dict[str, int]:
        segment = SCORES.c[column]
        query = sa.select(segment, sa.func.count()).where(SCORES.c.as_of == as_of).group_by(segment)
        return {str(row[0]): int(row[1]) for row in self._all(query)}

    def migration(self, column: str, previous_as_of: date, as_of: date) -> Migration:
        now, before = SCORES.alias("now"), SCORES.alias("before")
        joined = now.outerjoin(
            before, sa.and_(before.c.customer_id == now.c.customer_id, before.c.as_of == previous_as_of)
        )
        previous = sa.func.coalesce(before.c[column], NEW_CUSTOMER)
        query = (
            sa.select(previous.label("previous"), now.c[column].label("current"), sa.func.count().label("customers"))
            .select_from(joined)
            .where(now.c.as_of == as_of)
            .group_by(previous, now.c[column])
        )
        counts = pd.DataFrame(self._all(query), columns=["previous", "current", "customers"])
        return Migration(column, previous_as_of, as_of, counts)

    # -- writing

    def begin(self, entry: RunEntry) -> None:
        conn = self._connect()
        self._scope = entry.scope
        with conn.begin():
            STAGING.drop(conn, checkfirst=True)
            STAGING.create(conn)
            conn.execute(sa.insert(MANIFEST).values(**_manifest_values(entry)))

    def write(self, chunk: pa.Table) -> None:
        conn = self._connect()
        with self._database_errors("cannot write to the sink"), conn.begin():
            self._stage(conn, chunk)

    def _stage(self, conn: Connection, chunk: pa.Table) -> None:
        columns = [_sql_values(chunk.column(name)) for name in SCORE_COLUMNS]
        if self.dialect == "postgresql":
            raw = conn.connection.driver_connection
            assert raw is not None
            names = ", ".join(SCORE_COLUMNS)
            with raw.cursor() as cursor, cursor.copy(f"COPY {STAGING_TABLE} ({names}) FROM STDIN") as copy:
                for row in zip(*columns, strict=True):
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(SCORE_COLUMNS))
            conn.exec_driver_sql(f"INSERT INTO {STAGING_TABLE} VALUES ({marks})", list(zip(*columns, strict=True)))

    def commit(self, entry: RunEntry) -> None:
        conn = self._connect()
        with self._database_errors("cannot write to the sink"):
            with conn.begin():
                self._swap(conn, entry, self._scope)
            with conn.begin():
                STAGING.drop(conn, checkfirst=True)

    def _swap(self, conn: Connection, entry: RunEntry, scope: str) -> None:
        replaced = sa.delete(SCORES).where(SCORES.c.as_of == entry.as_of)
        if scope != "all":
            replaced = replaced.where(SCORES.c.customer_id.in_(sa.select(STAGING.c.customer_id)))
        conn.execute(replaced)
        conn.execute(sa.insert(SCORES).from_select(list(SCORE_COLUMNS), sa.select(STAGING)))
        conn.execute(sa.update(MANIFEST).where(MANIFEST.c.run_id == entry.run_id).values(**_manifest_values(entry)))

    def abort(self, entry: RunEntry) -> None:
        if self._conn is None:
            return
        try:
            if self._conn.in_transaction():
                self._conn.rollback()
            with self._conn.begin():
                STAGING.drop(self._conn, checkfirst=True)
                self._conn.execute(
                    sa.update(MANIFEST).where(MANIFEST.c.run_id == entry.run_id).values(**_manifest_values(entry))
                )
        except SQLAlchemyError:
            pass  # the sink went away: the run stays `running` there, and the error is reported anyway

    def _mark_failed(self, entries: Sequence[RunEntry]) -> None:
        conn = self._connect()
        with self._database_errors("cannot write to the sink"), conn.begin():
            for entry in entries:
                still_running = sa.and_(MANIFEST.c.run_id == entry.run_id, MANIFEST.c.status == RUNNING)
                conn.execute(sa.update(MANIFEST).where(still_running).values(status=entry.status, error=entry.error))


def _check_table(
    conn: Connection,
    table: sa.Table,
    schema: pa.Schema,
    added: Sequence[str],
    uri: str,
    renamed: Mapping[str, str] | None = None,
) -> None:
    """Refuse a table that would fail a run, or hand back other values than custlens wrote: a
    missing column (except one of `added`, which is added: its rows get NULL), a column whose type
    reads back as another Python type, NOT NULL where custlens writes NULL, a NOT NULL column of its
    own without a default, or a key other than custlens's. A column under an older name of
    `renamed` (old -> new) is renamed first, so it is checked, and kept, under today's name."""
    inspector = sa.inspect(conn)
    older = _older_names([column["name"] for column in inspector.get_columns(table.name)], renamed or {})
    for new, old in older.items():
        conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME COLUMN {old} TO {new}")
    if older:
        inspector = sa.inspect(conn)  # a fresh one: an inspector caches what it read
    found = {column["name"]: column for column in inspector.get_columns(table.name)}
    missing = [column.name for column in table.columns if column.name not in found]
    foreign = [name for name in missing if name not in added]
    if foreign:
        raise CustlensError(
            f"sink {uri}: the table {table.name} has no column {', '.join(foreign)}; it was not written by "
            "custlens. Rename or drop that table, or choose another --sink"
        )
    problems = []
    for name, column in found.items():
        if name not in table.columns:
            generated = column.get("computed") or column.get("identity") or column.get("autoincrement") is True
            if not column["nullable"] and column.get("default") is None and not generated:
                problems.append(f"column {name} is NOT NULL and has no default, and custlens does not write it")
            continue
        ours = table.c[name]
        python_type, what = _PYTHON_TYPES[schema.field(name).type]
        if _python_type(column["type"]) is not python_type:
            expected = ours.type.compile(dialect=conn.dialect)
            problems.append(f"column {name} is {_declared(column['type'], conn)}, custlens writes {what} ({expected})")
        if ours.nullable and not column["nullable"]:
            problems.append(f"column {name} is NOT NULL, but custlens writes NULL there where a value is not defined")
    key = tuple(column.name for column in table.primary_key)
    keys = _unique_keys(inspector, table.name)
    if wrong := [k for k in keys if not set(key) <= set(k)]:
        problems.append(f"it is keyed on ({', '.join(wrong[0])}); custlens writes one row per ({', '.join(key)})")
    elif not any(set(k) == set(key) for k in keys):
        problems.append(f"it has no key on ({', '.join(key)}) (ALTER TABLE {table.name} ADD PRIMARY KEY "
                        f"({', '.join(key)}) adds it)")  # fmt: skip
    if problems:
        raise CustlensError(
            f"sink {uri}: the table {table.name} does not hold what custlens writes: {'; '.join(problems)}. "
            "Alter or rename that table, or choose another --sink"
        )
    for name in missing:
        kind = table.c[name].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")


def _older_names(columns: Sequence[str], renamed: Mapping[str, str]) -> dict[str, str]:
    """Today's name -> the older name it has in `columns`, for each column of `renamed` (old -> new)
    present under its old name only."""
    return {new: old for old, new in renamed.items() if old in columns and new not in columns}


def _unique_keys(inspector: sa.Inspector, table: str) -> list[tuple[str, ...]]:
    """The column sets the table keeps unique: its primary key, unique constraints and unique indexes."""
    found: list[Sequence[str | None]] = [inspector.get_pk_constraint(table)["constrained_columns"] or []]
    found += [u["column_names"] for u in inspector.get_unique_constraints(table)]
    found += [i["column_names"] for i in inspector.get_indexes(table) if i["unique"]]
    # an index on an expression names no column there: not a key custlens rows could break by name
    return [tuple(name for name in key if name is not None) for key in found if key and None not in key]


def _python_type(kind: sa.types.TypeEngine[Any]) -> type | None:
    try:
        return kind.python_type
    except NotImplementedError:  # a type SQLAlchemy does not know (SQLite lets a column have any)
        return None


def _declared(kind: sa.types.TypeEngine[Any], conn: Connection) -> str:
    try:
        return str(kind.compile(dialect=conn.dialect))
    except sa.exc.CompileError:
        return "of no type custlens knows"


def _sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, begin transactions, so that the DDL and every
    statement of a swap share one (SQLAlchemy's documented recipe for pysqlite)."""

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # WAL: readers keep reading the previous result while a run commits the next.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def _sql_values(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values a driver binds: dates as ISO text (SQLite has no date type and
    PostgreSQL's COPY parses it), NaN as NULL."""
    if pa.types.is_date(column.type):
        return column.cast(pa.string()).to_pylist()
    if pa.types.is_floating(column.type):
        return pc.if_else(pc.is_nan(column), None, column).to_pylist()
    return column.to_pylist()


def _manifest_values(entry: RunEntry) -> dict[str, Any]:
    return asdict(entry)


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # SQLite keeps no offset; we only ever write UTC


def _without_password(uri: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", uri)


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


# ---------------------------------------------------------------------------------------------
# Files: Parquet and CSV


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection")
_FORMULA_START = r"^[=+\-@\t\r]"


def defuse_formulas(table: pa.Table) -> pa.Table:
    """Text cells that a spreadsheet would run as a formula (`=HYPERLINK(...)`, `+cmd|...`), prefixed
    with `'` so they open as text. Only for CSV: Parquet and SQL keep values exactly."""
    for index, column_field in enumerate(table.schema):
        if not pa.types.is_string(column_field.type):
            continue
        column = table.column(index)
        risky = pc.fill_null(pc.match_substring_regex(column, _FORMULA_START), False)
        quoted = pc.binary_join_element_wise("'", column, "")
        table = table.set_column(index, column_field, pc.if_else(risky, quoted, column))
    return table


class FileSink(Sink):
    def __init__(self, root: Path, kind: str) -> None:
        self.root = root.resolve()
        self.kind = kind
        self.uri = f"{kind}:{self.root}"
        self.scores_dir = self.root / SCORES_TABLE
        self.manifest_path = self.root / f"{MANIFEST_TABLE}.{kind}"
        self._writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        self._staged: Path | None = None
        self._staged_ids: list[pa.Array] = []

    def _final(self, as_of: date) -> Path:
        return self.scores_dir / f"{as_of}.{self.kind}"

    def check(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise CustlensError(f"sink {self.uri}: {self.root} is a file; {self.kind}:PATH names a folder")
        if not self.root.parent.is_dir():
            raise CustlensError(
                f"sink {self.uri}: folder {self.root.parent} does not exist; create it or choose another path"
            )
        try:
            self.scores_dir.mkdir(parents=True, exist_ok=True)
            # the manifest is replaced in the one folder, the scores file of the as-of in the other
            for folder in (self.root, self.scores_dir):
                probe = folder / f".probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            self.runs()  # an unreadable manifest is an error now, not after the scoring
            for path in sorted(self.scores_dir.glob(f"*.{self.kind}")):
                self._check_scores_file(path)  # read by the summary, or carried over, after the scoring
        except OSError as exc:
            raise self._cannot_write(exc) from None

    def _cannot_write(self, exc: OSError) -> CustlensError:
        return CustlensError(f"cannot write to the sink {self.uri}: {exc.strerror} ({exc.filename})")

    def _check_scores_file(self, path: Path) -> None:
        """A file of `customer_scores/` custlens can read back: named for its as-of date, with each
        column (those added since may be absent) of the type custlens writes (CSV: the first rows)."""
        try:
            date.fromisoformat(path.stem)
        except ValueError:
            raise CustlensError(
                f"sink {self.uri}: {path} is not named for an as-of date (YYYY-MM-DD.{self.kind}); move it out of "
                f"{self.scores_dir}"
            ) from None
        problems = []
        try:
            if self.kind == "parquet":
                schema, first_rows = pq.read_schema(path), None
            else:
                as_text = dict.fromkeys([*SCORE_COLUMNS, *RENAMED_SCORE_COLUMNS], pa.string())
                reader = pa_csv.open_csv(
                    path, read_options=pa_csv.ReadOptions(block_size=1 << 16),
                    convert_options=pa_csv.ConvertOptions(column_types=as_text, strings_can_be_null=True),
                )  # fmt: skip
                schema = reader.schema
                first_rows = next(iter(reader), None)
        except pa.ArrowException as exc:
            problems.append(f"cannot be read as {self.kind} ({_first_line(exc)})")
        else:
            # today's name -> the file's (an older one, in a file written before a rename)
            stored = {name: name for name in schema.names} | _older_names(schema.names, RENAMED_SCORE_COLUMNS)
            missing = [name for name in SCORE_COLUMNS if name not in stored and name not in ADDED_SCORE_COLUMNS]
            if missing:
                problems.append(f"has no column {', '.join(missing)}")
            for expected in SCORES_SCHEMA:
                if expected.name not in stored or expected.name in missing:
                    continue
                found = stored[expected.name]
                if self.kind == "parquet" and schema.field(found).type != expected.type:
                    problems.append(f"has column {found} as {schema.field(found).type}, "
                                    f"custlens writes {expected.type}")  # fmt: skip
                elif first_rows is not None:
                    try:
                        first_rows.column(found).cast(expected.type)
                    except pa.ArrowInvalid as exc:
                        problems.append(f"has column {found} that is not {expected.type} ({exc})")
        if problems:
            raise CustlensError(
                f"sink {self.uri}: {path} {'; '.join(problems)}: custlens did not write it like that. Move it "
                "away, or choose another --sink"
            )

    # -- reading

    def _read(self, path: Path, schema: pa.Schema, renamed: Mapping[str, str] | None = None) -> pa.Table:
        """A file as `schema`; a scores file from before ADDED_SCORE_COLUMNS reads them as NULL, one
        from before a rename of `renamed` (old -> new) reads its older columns under today's names."""
        older = _older_names(self._columns(path), renamed) if renamed else {}
        stored = pa.schema([f.with_name(older.get(f.name, f.name)) for f in schema])
        if self.kind == "parquet":
            table = pq.read_table(path, schema=stored)  # absent columns come back NULL
        else:
            table = pa_csv.read_csv(
                path,
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict(zip(stored.names, stored.types, strict=True)),
                    strings_can_be_null=True,
                    include_columns=stored.names,
                    include_missing_columns=True,
                ),
            ).cast(stored)
        return table.rename_columns(schema.names) if older else table

    def _columns(self, path: Path) -> list[str]:
        """The column names of a file: its Parquet schema, or its CSV header."""
        if self.kind == "parquet":
            return list(pq.read_schema(path).names)
        with path.open(newline="", encoding="utf-8") as file:
            return next(csv.reader(file), [])

    def runs(self) -> list[RunEntry]:
        done, _ = self._committed_pending()  # a commit killed between its renames: its scores are in
        path = done[-1] if done else self.manifest_path
        if not path.exists():
            return []
        try:
            table = self._read(path, MANIFEST_SCHEMA)
        except (pa.ArrowException, OSError) as exc:
            raise CustlensError(f"sink {self.uri}: cannot read the manifest {path}: {_first_line(exc)}") from None
        # Read as NULL when absent: only those added since may be.
        if absent := [f.name for f in MANIFEST_SCHEMA if not f.nullable and table.column(f.name).null_count]:
            raise CustlensError(
                f"sink {self.uri}: the manifest {self.manifest_path} has no value in {', '.join(absent)}; it was not "
                "written by custlens. Move it away, or choose another --sink"
            )
        entries = [RunEntry(**row) for row in table.to_pylist()]
        return sorted(entries, key=lambda e: (e.started_at, e.run_id))

    def as_of_dates(self) -> list[date]:
        if not self.scores_dir.is_dir():
            return []
        return sorted(date.fromisoformat(p.stem) for p in self.scores_dir.glob(f"*.{self.kind}"))

    def _scores_table(self, as_of: date) -> pa.Table:
        return self._read(self._final(as_of), SCORES_SCHEMA, RENAMED_SCORE_COLUMNS)

    def scores(self, as_of: date | None = None) -> pd.DataFrame:
        days = [as_of] if as_of is not None else self.as_of_dates()
        tables = [self._scores_table(day) for day in days if self._final(day).exists()]
        table = pa.concat_tables(tables) if tables else SCORES_SCHEMA.empty_table()
        table = table.sort_by([("as_of", "ascending"), ("customer_id", "ascending")])
        return table.to_pandas(types_mapper=None, date_as_object=True)

    def segment_counts(self, column: str, as_of: date) -> dict[str, int]:
        counts = self._scores_table(as_of).group_by(column).aggregate([([], "count_all")])
        return dict(zip(counts.column(column).to_pylist(), counts.column("count_all").to_pylist(), strict=True))

    def migration(self, column: str, previous_as_of: date, as_of: date) -> Migration:
        now = self._scores_table(as_of).select(["customer_id", column]).rename_columns(["customer_id", "current"])
        before = self._scores_table(previous_as_of).select(["customer_id", column])
        joined = now.join(before.rename_columns(["customer_id", "previous"]), "customer_id", join_type="left outer")
        joined = joined.set_column(
            joined.schema.get_field_index("previous"), "previous", pc.fill_null(joined.column("previous"), NEW_CUSTOMER)
        )
        counts = joined.group_by(["previous", "current"]).aggregate([([], "count_all")])
        frame = counts.to_pandas().rename(columns={"count_all": "customers"})
        return Migration(column, previous_as_of, as_of, frame[["previous", "current", "customers"]])

    # -- writing

    def begin(self, entry: RunEntry) -> None:
        self.scores_dir.mkdir(parents=True, exist_ok=True)
        self._settle_pending()  # before the leftovers go: a staged file tells an unfinished commit
        for leftover in self.scores_dir.glob(f".{entry.as_of}.*.tmp"):
            leftover.unlink(missing_ok=True)  # from a run of this date that was killed
        self._record(entry)
        self._staged = self.scores_dir / f".{entry.as_of}.{entry.run_id}.tmp"
        self._staged_ids = []
        if self.kind == "parquet":
            self._writer = pq.ParquetWriter(self._staged, SCORES_SCHEMA, compression="zstd")
        else:
            self._writer = pa_csv.CSVWriter(self._staged, SCORES_SCHEMA)

    def write(self, chunk: pa.Table) -> None:
        assert self._writer is not None, "begin() first"
        self._writer.write_table(defuse_formulas(chunk) if self.kind == "csv" else chunk)
        self._staged_ids.append(chunk.column("customer_id").combine_chunks())

    def commit(self, entry: RunEntry) -> None:
        assert self._writer is not None and self._staged is not None, "begin() first"
        final = self._final(entry.as_of)
        if entry.scope != "all" and final.exists():
            # Listed customers replace only their own rows: carry the others over.
            scored = pa.chunked_array(self._staged_ids, pa.string())
            kept = self._scores_table(entry.as_of)
            kept = kept.filter(pc.invert(pc.is_in(kept.column("customer_id"), value_set=scored.combine_chunks())))
            self._writer.write_table(kept)
        self._writer.close()
        self._writer = None
        fsync_file(self._staged)  # on disk before the rename, as in atomic_file
        # The scores file's rename is the commit; the manifest saying so is written first, beside
        # it, and renamed in after: a kill between the renames leaves a pending manifest that
        # `runs()` reads (the staged file is gone) and the next writer renames in (_settle_pending).
        pending = self._pending_path(entry)
        self._write_manifest(self._with(entry), pending)
        os.replace(self._staged, final)
        self._staged = None
        os.replace(pending, self.manifest_path)

    def abort(self, entry: RunEntry) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._staged is not None:
            # the pending manifest first: without its staged file it would read as committed
            self._pending_path(entry).unlink(missing_ok=True)
            self._staged.unlink(missing_ok=True)
            self._staged = None
        with contextlib.suppress(OSError):  # the folder went away: the error is reported anyway
            self._record(entry)

    def _mark_failed(self, entries: Sequence[RunEntry]) -> None:
        try:
            self._record(*entries)
        except OSError as exc:
            raise self._cannot_write(exc) from None

    def _record(self, *entries: RunEntry) -> None:
        """The manifest with `entries` added or updated, swapped in whole."""
        self._settle_pending()
        self._write_manifest(self._with(*entries), self.manifest_path)

    def _with(self, *entries: RunEntry) -> list[RunEntry]:
        runs = {run.run_id: run for run in self.runs()}
        runs.update((entry.run_id, entry) for entry in entries)
        return list(runs.values())

    def _write_manifest(self, runs: list[RunEntry], path: Path) -> None:
        table = pa.Table.from_pylist([asdict(run) for run in runs], schema=MANIFEST_SCHEMA)
        # renamed only once its bytes are on disk: a crash of the machine never leaves a short file
        with atomic_file(path, durable=True) as partial:
            if self.kind == "parquet":
                pq.write_table(table, partial)
            else:
                pa_csv.write_csv(table, partial)

    def _pending_path(self, entry: RunEntry) -> Path:
        return self.root / f".{self.manifest_path.name}.{entry.as_of}.{entry.run_id}.pending"

    def _committed_pending(self) -> tuple[list[Path], list[Path]]:
        """Pending manifests of commits that were killed between their two renames: those whose
        scores file was renamed in (its staged file is gone) and those whose was not."""
        done: list[Path] = []
        undone: list[Path] = []
        for pending in sorted(self.root.glob(f".{self.manifest_path.name}.*.pending")):
            as_of, run_id = pending.name.removeprefix(f".{self.manifest_path.name}.").split(".")[:2]
            staged = self.scores_dir / f".{as_of}.{run_id}.tmp"
            (undone if staged.exists() else done).append(pending)
        return done, undone

    def _settle_pending(self) -> None:
        """Finish what a killed commit left: its manifest renamed in if its scores were, else dropped."""
        done, undone = self._committed_pending()
        for pending in done:
            os.replace(pending, self.manifest_path)
        for pending in undone:
            pending.unlink(missing_ok=True)
