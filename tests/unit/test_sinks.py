"""The write-back sinks on hand-made chunks, without a trained project: every sink stores the
currency of predicted CLV, and a sink written before that column existed takes new runs (SQL: the
column is added; files: the old rows read it as NULL) without a traceback; one written before the
outputs lost their window in the name migrates (SQL: the columns are renamed in the check's
transaction; files: read under today's names)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from custlens.errors import CustlensError
from serving.sinks import (
    ADDED_MANIFEST_COLUMNS,
    FAILED,
    MANIFEST_SCHEMA,
    MANIFEST_TABLE,
    MODEL_VERSION_COLUMNS,
    RENAMED_SCORE_COLUMNS,
    RUNNING,
    SCORES,
    SCORES_SCHEMA,
    SCORES_TABLE,
    SUCCEEDED,
    RunEntry,
    open_sink,
)
from tests.support.databases import POSTGRES_URL, postgres_schema_url
from tests.support.run_holder import holding
from tests.support.sinks import sink_runs, sink_scores

AS_OF = date(2025, 1, 1)


def chunk(run_id: str, customers: dict[str, float], currency: str | None, as_of: date = AS_OF) -> pa.Table:
    """Rows as serving.batch writes them: each customer's predicted CLV in `currency`."""
    count = len(customers)
    columns: dict[str, list[object]] = {name: [None] * count for name in SCORES_SCHEMA.names}
    columns.update(
        customer_id=list(customers), as_of=[as_of] * count, predicted_clv=list(customers.values()),
        currency=[currency] * count, scoring_run_id=[run_id] * count,
        **{name: ["1"] * count for name in MODEL_VERSION_COLUMNS},
    )  # fmt: skip
    return pa.Table.from_pydict(columns, schema=SCORES_SCHEMA)


def run(uri: str, rows: pa.Table, scope: str = "all", as_of: date = AS_OF) -> str:
    """One scoring run of `rows` into the sink: check, begin, write, commit."""
    run_id = uuid.uuid4().hex
    rows = rows.set_column(rows.schema.get_field_index("scoring_run_id"), "scoring_run_id",
                           pa.array([run_id] * len(rows), pa.string())).cast(SCORES_SCHEMA)  # fmt: skip
    entry = RunEntry(run_id=run_id, as_of=as_of, status="running", scope=scope, started_at=datetime.now(UTC),
                     churn_model_version="1", repurchase_model_version="1", clv_model_version="1",
                     segments_model_version="1")  # fmt: skip
    sink = open_sink(uri)
    try:
        sink.check()
        sink.begin(entry)
        sink.write(rows)
        sink.commit(RunEntry(**{**entry.__dict__, "status": SUCCEEDED, "rows": len(rows)}))
    finally:
        sink.close()
    return run_id


def read(uri: str) -> dict[str, tuple[float | None, str | None]]:
    frame = sink_scores(uri)
    assert list(frame.columns) == SCORES_SCHEMA.names
    return {row.customer_id: (row.predicted_clv, row.currency) for row in frame.itertuples()}


def a_sink(kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty sink of `kind`; PostgreSQL in a schema of our own, dropped afterwards."""
    if kind == "postgresql":
        yield from postgres_schema_url("custlens_sinks")
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'scores.db'}"
    else:
        yield f"{kind}:{tmp_path / 'scores'}"


@pytest.fixture(params=["sqlite", "postgresql", "parquet", "csv"])
def sink_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from a_sink(request.param, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_sink_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from a_sink(request.param, tmp_path)


def test_every_sink_stores_the_currency_of_predicted_clv(sink_uri: str) -> None:
    # given a run of two customers' CLV in VND, and one of a lake that never recorded a currency
    run(sink_uri, chunk("r", {"C1": 1_250_000.0, "C2": 0.0}, "VND"))
    run(sink_uri, chunk("r", {"C3": 37.42}, None, as_of=date(2025, 2, 1)), as_of=date(2025, 2, 1))
    # then every row says what its CLV is in (NULL where nothing was known)
    assert read(sink_uri) == {"C1": (1_250_000.0, "VND"), "C2": (0.0, "VND"), "C3": (37.42, None)}


OLD_COLUMNS = [name for name in SCORES_SCHEMA.names if name != "currency"]


def test_a_sql_table_from_before_the_currency_column_gets_it_added(sql_sink_uri: str) -> None:
    # given a customer_scores table as custlens wrote it before currency, holding one row
    run(sql_sink_uri, chunk("r", {"OLD": 5.0}, "USD"))
    engine = sa.create_engine(sql_sink_uri.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {SCORES_TABLE} DROP COLUMN currency")
    engine.dispose()
    # when a new run of another as-of date writes to it
    run(sql_sink_uri, chunk("r", {"NEW": 7.5}, "USD", as_of=date(2025, 2, 1)), as_of=date(2025, 2, 1))
    # then the column was added, the old row has no currency and the new one has
    assert read(sql_sink_uri) == {"OLD": (5.0, None), "NEW": (7.5, "USD")}


RANGE_COLUMNS = ("predicted_clv_p10", "predicted_clv_p90")


def with_range(rows: pa.Table, low: float, high: float) -> pa.Table:
    for name, value in zip(RANGE_COLUMNS, (low, high), strict=True):
        rows = rows.set_column(rows.schema.get_field_index(name), name, pa.array([value] * len(rows), pa.float64()))
    return rows


def ranges(uri: str) -> dict[str, tuple[float | None, float | None]]:
    frame = sink_scores(uri)
    return {row.customer_id: (None if pd.isna(row.predicted_clv_p10) else row.predicted_clv_p10,
                              None if pd.isna(row.predicted_clv_p90) else row.predicted_clv_p90)
            for row in frame.itertuples()}  # fmt: skip


def test_a_sink_from_before_the_clv_range_gets_its_columns_and_old_rows_read_null(sql_sink_uri: str) -> None:
    # given a customer_scores table as custlens wrote it before predicted_clv_p10 / _p90
    run(sql_sink_uri, chunk("r", {"OLD": 5.0}, "USD"))
    engine = sa.create_engine(sql_sink_uri.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for name in RANGE_COLUMNS:
            conn.exec_driver_sql(f"ALTER TABLE {SCORES_TABLE} DROP COLUMN {name}")
    engine.dispose()
    # when a new run writes a customer's CLV with its range
    run(sql_sink_uri, with_range(chunk("r", {"NEW": 7.5}, "USD", as_of=date(2025, 2, 1)), 0.0, 20.0),
        as_of=date(2025, 2, 1))  # fmt: skip
    # then the columns were added: the old row has no range, the new one has its own
    assert ranges(sql_sink_uri) == {"OLD": (None, None), "NEW": (0.0, 20.0)}


def test_a_sql_table_missing_a_column_custlens_always_wrote_is_a_clear_error(tmp_path: Path) -> None:
    database = tmp_path / "scores.db"
    with sqlite3.connect(database) as conn:
        conn.execute(f"CREATE TABLE {SCORES_TABLE} (customer_id TEXT, as_of DATE)")

    with pytest.raises(CustlensError, match="has no column crm_customer_id"):
        run(f"sqlite:///{database}", chunk("r", {"C1": 1.0}, "USD"))


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_scores_file_from_before_the_currency_column_reads_it_as_null(kind: str, tmp_path: Path) -> None:
    # given a file of an as-of date written before currency existed
    uri = f"{kind}:{tmp_path / 'scores'}"
    run(uri, chunk("r", {"OLD": 5.0, "KEPT": 6.0}, "USD"))
    path = tmp_path / "scores" / SCORES_TABLE / f"{AS_OF}.{kind}"
    old = (pq.read_table(path) if kind == "parquet" else pa_csv.read_csv(path)).select(OLD_COLUMNS)
    pq.write_table(old, path) if kind == "parquet" else pa_csv.write_csv(old, path)
    # when listed customers of that date are scored again (the others are carried over)
    run(uri, chunk("r", {"OLD": 9.0}, "USD"), scope="listed")
    # then the carried-over row has no currency, the new one has
    assert read(uri) == {"OLD": (9.0, "USD"), "KEPT": (6.0, None)}


def test_a_sql_table_with_the_older_column_names_is_renamed_by_the_check_and_keeps_its_rows(
    sql_sink_uri: str,
) -> None:
    # given a customer_scores table as custlens wrote it before the rename, holding one row
    run(sql_sink_uri, chunk("r", {"OLD": 5.0}, "USD"))
    engine = sql_engine(sql_sink_uri)
    with engine.begin() as conn:
        for old, new in RENAMED_SCORE_COLUMNS.items():
            conn.exec_driver_sql(f"ALTER TABLE {SCORES_TABLE} RENAME COLUMN {new} TO {old}")
    # when a new run of another as-of date writes to it
    run(sql_sink_uri, chunk("r", {"NEW": 7.5}, "USD", as_of=date(2025, 2, 1)), as_of=date(2025, 2, 1))
    # then the columns have today's names, and the old row its values under them
    with engine.connect() as conn:
        columns = [column["name"] for column in sa.inspect(conn).get_columns(SCORES_TABLE)]
    engine.dispose()
    assert set(RENAMED_SCORE_COLUMNS.values()) <= set(columns) and not set(RENAMED_SCORE_COLUMNS) & set(columns)
    assert read(sql_sink_uri) == {"OLD": (5.0, "USD"), "NEW": (7.5, "USD")}


def test_a_rename_by_a_check_that_then_refuses_the_table_is_rolled_back(sql_sink_uri: str) -> None:
    # given a table under the older names that is also keyed on the customer alone
    run(sql_sink_uri, chunk("r", {"OLD": 5.0}, "USD"))
    engine = sql_engine(sql_sink_uri)
    with engine.begin() as conn:
        for old, new in RENAMED_SCORE_COLUMNS.items():
            conn.exec_driver_sql(f"ALTER TABLE {SCORES_TABLE} RENAME COLUMN {new} TO {old}")
        conn.exec_driver_sql(f"CREATE UNIQUE INDEX one_row_per_customer ON {SCORES_TABLE} (customer_id)")
    # when the check refuses it
    with pytest.raises(CustlensError, match=r"it is keyed on \(customer_id\)"):
        run(sql_sink_uri, chunk("r", {"NEW": 7.5}, "USD"))
    # then the table keeps its older names: nothing changed
    with engine.connect() as conn:
        columns = [column["name"] for column in sa.inspect(conn).get_columns(SCORES_TABLE)]
    engine.dispose()
    assert set(RENAMED_SCORE_COLUMNS) <= set(columns) and not set(RENAMED_SCORE_COLUMNS.values()) & set(columns)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_scores_file_with_the_older_column_names_reads_back_under_todays(kind: str, tmp_path: Path) -> None:
    # given a file of an as-of date written before the rename
    uri = f"{kind}:{tmp_path / 'scores'}"
    run(uri, chunk("r", {"OLD": 5.0, "KEPT": 6.0}, "USD"))
    path = tmp_path / "scores" / SCORES_TABLE / f"{AS_OF}.{kind}"
    table = pq.read_table(path) if kind == "parquet" else pa_csv.read_csv(path)
    older = {new: old for old, new in RENAMED_SCORE_COLUMNS.items()}
    table = table.rename_columns([older.get(name, name) for name in table.column_names])
    pq.write_table(table, path) if kind == "parquet" else pa_csv.write_csv(table, path)
    # then it reads under today's names, with its values
    assert read(uri) == {"OLD": (5.0, "USD"), "KEPT": (6.0, "USD")}
    # and when listed customers of that date are scored again, the carried-over row keeps its value
    run(uri, chunk("r", {"OLD": 9.0}, "USD"), scope="listed")
    assert read(uri) == {"OLD": (9.0, "USD"), "KEPT": (6.0, "USD")}
    rewritten = pq.read_schema(path).names if kind == "parquet" else pa_csv.read_csv(path).column_names
    assert rewritten == SCORES_SCHEMA.names


FORMULAS = ['=HYPERLINK("http://evil","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]


def _with_crm_ids(rows: pa.Table, crm_ids: list[str]) -> pa.Table:
    index = rows.schema.get_field_index("crm_customer_id")
    return rows.set_column(index, rows.schema.field(index), pa.array(crm_ids, pa.string()))


def test_the_csv_sink_writes_formula_cells_as_text(tmp_path: Path) -> None:
    # given CRM ids a spreadsheet would run as formulas, and a harmless one
    customers = {f"C{i}": 1.0 for i in range(len(FORMULAS) + 1)}
    rows = _with_crm_ids(chunk("r", customers, "USD"), [*FORMULAS, "CRM-1"])
    run(f"csv:{tmp_path / 'scores'}", rows)
    # then each risky cell starts with a quote (OWASP), the harmless one is as it was
    written = pa_csv.read_csv(tmp_path / "scores" / SCORES_TABLE / f"{AS_OF}.csv").column("crm_customer_id")
    assert written.to_pylist() == [f"'{value}" for value in FORMULAS] + ["CRM-1"]


def test_parquet_and_sql_sinks_keep_values_exactly(tmp_path: Path) -> None:
    rows = _with_crm_ids(chunk("r", {"C0": 1.0, "C1": 2.0}, "USD"), [FORMULAS[0], "CRM-1"])
    for uri in (f"parquet:{tmp_path / 'p'}", f"sqlite:///{tmp_path / 's.db'}"):
        run(uri, rows)
        sink = open_sink(uri)
        try:
            assert sorted(sink.scores()["crm_customer_id"]) == sorted([FORMULAS[0], "CRM-1"])
        finally:
            sink.close()


# ---------------------------------------------------------------------------------------------
# The check, whole, before any scoring: URL, table schema and key, write permission, files


def check(uri: str) -> None:
    sink = open_sink(uri)
    try:
        sink.check()
    finally:
        sink.close()


def sql_engine(uri: str) -> sa.Engine:
    return sa.create_engine(uri.replace("postgresql://", "postgresql+psycopg://"))


def create_scores_table(uri: str, *changed: sa.Column[object], key: Sequence[str] = ("as_of", "customer_id")) -> None:
    """A `customer_scores` table as custlens writes it, but with the `changed` columns (same name:
    replaced, new name: added) and the primary key `key`."""
    replaced = {column.name: column for column in changed}
    columns = [
        sa.Column(column.name, column.type, nullable=column.nullable)  # a copy: a column belongs to one table
        for column in (replaced.pop(name) if name in replaced else SCORES.c[name] for name in SCORES.c.keys())  # noqa: SIM118 - names, not columns
    ]
    added = [sa.Column(column.name, column.type, nullable=column.nullable) for column in replaced.values()]
    table = sa.Table(SCORES_TABLE, sa.MetaData(), *columns, *added, sa.PrimaryKeyConstraint(*key))
    engine = sql_engine(uri)
    with engine.begin() as conn:
        table.create(conn)
    engine.dispose()


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@host:notaport/crm", "postgresql://u@[::1/crm", "sqlite://x:y", "postgresql://u@host:99999/crm"],
)
def test_a_malformed_sink_url_is_a_one_line_error(url: str) -> None:
    with pytest.raises(CustlensError, match="is not a database URL") as raised:
        check(url)
    assert "\n" not in str(raised.value)


def test_a_sink_url_of_a_driver_not_installed_is_a_one_line_error() -> None:
    with pytest.raises(CustlensError, match=r"no driver postgresql\+nosuchdriver"):
        check("postgresql+nosuchdriver://u@localhost/crm")


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (sa.Column("churn_probability", sa.Text()), "churn_probability is TEXT, custlens writes a floating-point"),
        (sa.Column("as_of", sa.Integer(), nullable=False), "as_of is INTEGER, custlens writes a date"),
        (sa.Column("churn_risk", sa.Text(), nullable=False), "churn_risk is NOT NULL"),
        (sa.Column("crm_notes", sa.Text(), nullable=False), "crm_notes is NOT NULL and has no default"),
    ],
    ids=["text for a number", "integer for a date", "not null where custlens writes null", "foreign not null"],
)
def test_a_sql_table_of_the_wrong_schema_is_refused_by_the_check(
    sql_sink_uri: str, column: sa.Column[object], message: str
) -> None:
    # given a customer_scores table that differs from what the batch writes in one column
    create_scores_table(sql_sink_uri, column)
    # then the check says which column and how, in one line
    with pytest.raises(CustlensError, match=message) as raised:
        check(sql_sink_uri)
    assert "\n" not in str(raised.value)


def test_a_sql_table_keyed_on_the_customer_alone_is_refused_by_the_check(sql_sink_uri: str) -> None:
    # given the CRM's own table of one row per customer: a second as-of date could never go in
    create_scores_table(sql_sink_uri, key=("customer_id",))
    with pytest.raises(
        CustlensError, match=r"keyed on \(customer_id\); custlens writes one row per \(customer_id, as_of"
    ):
        check(sql_sink_uri)


def test_a_sql_table_without_a_key_is_refused_by_the_check(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'scores.db'}"
    columns = [sa.Column(column.name, column.type) for column in SCORES.columns]
    engine = sql_engine(uri)
    with engine.begin() as conn:
        sa.Table(SCORES_TABLE, sa.MetaData(), *columns).create(conn)
    engine.dispose()
    with pytest.raises(CustlensError, match=r"has no key on \(customer_id, as_of\)"):
        check(uri)


def test_a_sql_table_with_compatible_types_of_its_own_passes_and_takes_a_run(sql_sink_uri: str) -> None:
    # given a table a DBA made: VARCHAR for text, REAL for the probabilities
    create_scores_table(sql_sink_uri, sa.Column("customer_id", sa.String(64), nullable=False),
                        sa.Column("churn_probability", sa.REAL()), sa.Column("crm_notes", sa.Text()))  # fmt: skip
    run(sql_sink_uri, chunk("r", {"C1": 1.0}, "USD"))
    assert read(sql_sink_uri) == {"C1": (1.0, "USD")}


def test_the_write_probe_of_the_check_leaves_no_trace(sink_uri: str) -> None:
    # given a sink holding one run
    run(sink_uri, chunk("r", {"C1": 1.0}, "USD"))
    sink = open_sink(sink_uri)
    try:
        before = (sink.scores(), sink.runs())
        # when it is checked again
        sink.check()
        # then it holds the same rows and runs
        after = (sink.scores(), sink.runs())
    finally:
        sink.close()
    assert after[0].equals(before[0]) and after[1] == before[1]
    if sink_uri.startswith(("parquet:", "csv:")):
        folder = Path(sink_uri.partition(":")[2])
        assert sorted(p.name for p in folder.rglob("*")) == sorted(
            [SCORES_TABLE, f"{AS_OF}.{sink_uri.partition(':')[0]}", f"scoring_runs.{sink_uri.partition(':')[0]}"]
        )


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    yield from postgres_schema_url("custlens_grants")


@contextmanager
def postgres_role(schema_url: str, grants: Sequence[str]) -> Iterator[str]:
    """A role of our own that may only do `grants` in the schema of `schema_url` (which the sink's
    tables are in); the URL of that schema as that role. Dropped afterwards."""
    import psycopg

    role = f"custlens_role_{uuid.uuid4().hex[:10]}"
    schema = schema_url.rpartition("%3D")[2]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        for grant in grants:
            conn.execute(grant.format(role=role, schema=schema))
    try:
        yield schema_url.replace("postgresql://postgres@", f"postgresql://{role}@")
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")  # its privileges, in this database
            conn.execute(f"DROP ROLE {role}")


READ_ONLY = [f"GRANT SELECT ON {{schema}}.{SCORES_TABLE}, {{schema}}.{MANIFEST_TABLE} TO {{role}}"]
# What the write-back needs on the manifest, and only reading on the scores: the check used to try
# the manifest alone.
SCORES_READ_ONLY = [f"GRANT SELECT ON {{schema}}.{SCORES_TABLE} TO {{role}}",
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON {{schema}}.{MANIFEST_TABLE} TO {{role}}"]  # fmt: skip
WRITER = [f"GRANT SELECT, INSERT, DELETE ON {{schema}}.{SCORES_TABLE} TO {{role}}",
          f"GRANT SELECT, INSERT, UPDATE ON {{schema}}.{MANIFEST_TABLE} TO {{role}}"]  # fmt: skip


@pytest.mark.parametrize("grants", [READ_ONLY, SCORES_READ_ONLY], ids=["read only", "scores read only"])
def test_a_postgresql_role_that_cannot_write_the_scores_is_refused_by_the_check(
    postgres_schema: str, grants: list[str]
) -> None:
    # given the sink's tables, and a role that may read them but not write the scores
    run(postgres_schema, chunk("r", {"C1": 1.0}, "USD"))
    with postgres_role(postgres_schema, grants) as as_role:
        # then its check fails in one line that names the table and what to grant
        with pytest.raises(CustlensError, match=r"permission denied for table .*; grant the sink's user") as raised:
            check(as_role)
        assert "\n" not in str(raised.value)
    # and the tables hold what they held
    assert read(postgres_schema) == {"C1": (1.0, "USD")}


def test_a_postgresql_role_with_the_grants_the_write_back_needs_passes_the_check_and_writes(
    postgres_schema: str,
) -> None:
    run(postgres_schema, chunk("r", {"C1": 1.0}, "USD"))
    with postgres_role(postgres_schema, WRITER) as as_role:
        run(as_role, chunk("r", {"C2": 2.0}, "USD"))
        assert read(as_role) == {"C2": (2.0, "USD")}  # a run of all customers replaces the as-of


def test_a_read_only_sqlite_file_is_refused_by_the_check(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'scores.db'}"
    run(uri, chunk("r", {"C1": 1.0}, "USD"))
    sink = open_sink(uri)
    try:
        sink.check()
        conn = sink._connect()
        conn.exec_driver_sql("PRAGMA query_only = ON")  # what a read-only file is, even for root
        conn.commit()
        with pytest.raises(CustlensError, match=r"cannot write to the sink .*attempt to write a readonly database"):
            sink.check()
    finally:
        sink.close()


def as_another_user(action: Callable[[], None]) -> str | None:
    """Run `action` in a forked child without root's power to write anywhere (as `nobody` when the
    tests run as root); the CustlensError it raised, or None."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def child() -> None:
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        try:
            action()
            writer.send(None)
        except CustlensError as exc:
            writer.send(str(exc))
        except BaseException as exc:  # anything else is the defect itself
            writer.send(f"{type(exc).__name__}: {exc}")

    process = context.Process(target=child)
    process.start()
    outcome = reader.recv()
    process.join()
    return outcome


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_file_sink_whose_folder_is_not_writable_is_refused_by_the_check(kind: str) -> None:
    # given a sink folder written before (its customer_scores folder still writable), now read only
    folder = Path(tempfile.mkdtemp(prefix="custlens-sink-"))  # not under pytest's root-only tmp folder
    try:
        folder.chmod(0o755)
        uri = f"{kind}:{folder / 'scores'}"
        run(uri, chunk("r", {"C1": 1.0}, "USD"))
        (folder / "scores" / SCORES_TABLE).chmod(0o777)
        (folder / "scores").chmod(0o555)
        # then the check says the manifest's folder cannot be written, before any scoring
        message = as_another_user(lambda: check(uri))
        assert message is not None and message.startswith("cannot write to the sink"), message
        assert "Permission denied" in message and "\n" not in message
    finally:
        (folder / "scores").chmod(0o755)
        shutil.rmtree(folder)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_an_existing_scores_file_of_the_wrong_schema_is_refused_by_the_check(kind: str, tmp_path: Path) -> None:
    # given a sink whose file of an earlier as-of date holds text where custlens writes numbers
    uri = f"{kind}:{tmp_path / 'scores'}"
    run(uri, chunk("r", {"C1": 1.0}, "USD"))
    path = tmp_path / "scores" / SCORES_TABLE / f"{AS_OF}.{kind}"
    table = pq.read_table(path) if kind == "parquet" else pa_csv.read_csv(path)
    index = table.schema.get_field_index("churn_probability")
    table = table.set_column(index, "churn_probability", pa.array(["high"] * len(table), pa.string()))
    pq.write_table(table, path) if kind == "parquet" else pa_csv.write_csv(table, path)
    # then the check names the file and the column
    with pytest.raises(CustlensError, match=rf"{AS_OF}.{kind} .*churn_probability") as raised:
        check(uri)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_scores_file_missing_a_column_or_not_named_for_a_date_is_refused_by_the_check(
    kind: str, tmp_path: Path
) -> None:
    uri = f"{kind}:{tmp_path / 'scores'}"
    run(uri, chunk("r", {"C1": 1.0}, "USD"))
    scores = tmp_path / "scores" / SCORES_TABLE
    path = scores / f"{AS_OF}.{kind}"
    table = (pq.read_table(path) if kind == "parquet" else pa_csv.read_csv(path)).drop_columns(["customer_id"])
    pq.write_table(table, path) if kind == "parquet" else pa_csv.write_csv(table, path)
    with pytest.raises(CustlensError, match=f"{AS_OF}.{kind} has no column customer_id"):
        check(uri)
    path.unlink()
    (scores / f"notes.{kind}").write_text("a file of someone else's")
    with pytest.raises(CustlensError, match=f"notes.{kind} is not named for an as-of date"):
        check(uri)


# ---------------------------------------------------------------------------------------------
# Runs left `running` by a killed process


def test_a_run_left_running_by_a_killed_process_is_marked_failed_at_the_next_start(sink_uri: str) -> None:
    # given a run begun by a process killed outright, one of a process still running, and one of
    # another host (whose processes this one cannot see)
    with holding("--sink", sink_uri) as killed, holding("--sink", sink_uri) as alive:
        killed.kill()
        elsewhere = RunEntry(run_id="elsewhere", as_of=AS_OF, status=RUNNING, scope="all", started_at=datetime.now(UTC),
                             churn_model_version="1", repurchase_model_version="1", clv_model_version="1",
                             segments_model_version="1", host="another-host", pid=killed.pid)  # fmt: skip
        sink = open_sink(sink_uri)
        try:
            sink.begin(elsewhere)
            sink.abort(elsewhere)  # drops its staging, keeps it `running`
            # when the next run starts
            marked = sink.fail_killed_runs()
            runs = {run.run_id: run for run in sink.runs()}
        finally:
            sink.close()
    # then only the killed process's run is failed, saying why
    assert [run.run_id for run in marked] == [killed.run_id]
    host = socket.gethostname()
    assert (runs[killed.run_id].status, runs[killed.run_id].error) == (
        FAILED,
        f"killed: process {killed.pid} on {host} is gone",
    )
    assert (runs[killed.run_id].host, runs[killed.run_id].pid) == (host, killed.pid)
    assert runs[alive.run_id].status == RUNNING and runs["elsewhere"].status == RUNNING


def test_a_sql_manifest_from_before_host_and_pid_gets_them_added(sql_sink_uri: str) -> None:
    # given a manifest as custlens wrote it before it recorded who ran each run
    run_id = run(sql_sink_uri, chunk("r", {"C1": 1.0}, "USD"))
    engine = sql_engine(sql_sink_uri)
    with engine.begin() as conn:
        for column in ADDED_MANIFEST_COLUMNS:
            conn.exec_driver_sql(f"ALTER TABLE {MANIFEST_TABLE} DROP COLUMN {column}")
    engine.dispose()
    # when a new run is written, then the old run reads with no host, and the new run is recorded
    new_id = run(sql_sink_uri, chunk("r", {"C1": 2.0}, "USD"))
    runs = {entry.run_id: entry for entry in sink_runs(sql_sink_uri)}
    assert (runs[run_id].host, runs[run_id].pid) == (None, None)
    assert runs[new_id].status == SUCCEEDED


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_manifest_file_from_before_host_and_pid_reads_them_as_null(kind: str, tmp_path: Path) -> None:
    uri = f"{kind}:{tmp_path / 'scores'}"
    run_id = run(uri, chunk("r", {"C1": 1.0}, "USD"))
    path = tmp_path / "scores" / f"{MANIFEST_TABLE}.{kind}"
    types = pa_csv.ConvertOptions(column_types=dict(zip(MANIFEST_SCHEMA.names, MANIFEST_SCHEMA.types, strict=True)))
    old = pq.read_table(path) if kind == "parquet" else pa_csv.read_csv(path, convert_options=types)
    old = old.drop_columns(list(ADDED_MANIFEST_COLUMNS))
    pq.write_table(old, path) if kind == "parquet" else pa_csv.write_csv(old, path)
    new_id = run(uri, chunk("r", {"C1": 2.0}, "USD"))
    runs = {entry.run_id: entry for entry in sink_runs(uri)}
    assert (runs[run_id].host, runs[run_id].pid, runs[run_id].status) == (None, None, SUCCEEDED)
    assert runs[new_id].status == SUCCEEDED


@pytest.mark.parametrize("kind", ["parquet", "csv"])
@pytest.mark.parametrize("killed_at", ["scores rename", "manifest rename"])
def test_a_file_sink_commit_killed_between_its_renames_reads_as_what_it_reached(
    kind: str, killed_at: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scores file's rename is the commit: killed after it, the run reads succeeded (its manifest
    is pending beside the old one); killed before it, the previous run holds and nothing is pending."""
    import serving.sinks as sinks

    uri = f"{kind}:{tmp_path / 'scores'}"
    first = run(uri, chunk("x", {"c1": 1.0}, "USD"))
    real_replace, renamed = os.replace, []

    def killed(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        scores_rename = Path(target).name == f"{AS_OF}.{kind}"
        if (scores_rename and killed_at == "scores rename") or renamed:
            raise KeyboardInterrupt  # the kill lands here, or at the first rename after the scores'
        real_replace(source, target)
        renamed.extend([target] if scores_rename and killed_at == "manifest rename" else [])

    monkeypatch.setattr(sinks.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run(uri, chunk("x", {"c1": 2.0, "c2": 3.0}, "USD"))
    monkeypatch.setattr(sinks.os, "replace", real_replace)
    statuses = [run.status for run in sink_runs(uri)]
    holder = set(open_sink(uri).scores()["scoring_run_id"])
    if killed_at == "manifest rename":  # the scores were renamed in: that run succeeded
        assert statuses == [SUCCEEDED, SUCCEEDED] and holder != {first}
    else:
        assert statuses == [SUCCEEDED, RUNNING] and holder == {first}
    # and the next run settles the pending manifest: renamed in, or dropped
    run(uri, chunk("x", {"c1": 4.0}, "USD"))
    assert not list((tmp_path / "scores").glob(".*.pending"))
    assert [run.status for run in sink_runs(uri)][-1] == SUCCEEDED
    assert len(sink_runs(uri)) == 3


def test_the_score_bins_of_a_run_from_before_the_rename_read_under_todays_names() -> None:
    # given a run whose drift bins were keyed by the older names
    bins = {"predicted_clv_12m": {"edges": [1.0], "shares": [0.5, 0.5]}, "churn_probability": None}
    entry = RunEntry(run_id="r", as_of=AS_OF, status=SUCCEEDED, scope="all", started_at=datetime.now(UTC),
                     churn_model_version="1", repurchase_model_version="1", clv_model_version="1",
                     segments_model_version="1", score_bins=json.dumps(bins))  # fmt: skip
    # then the next run compares its predicted_clv with them
    assert entry.bins() == {"predicted_clv": bins["predicted_clv_12m"], "churn_probability": None}
    assert entry.window_days() == {}  # and it states no windows: they were the configured ones then
