"""The write-back sinks on hand-made chunks, without a trained project: every sink stores the
currency of predicted CLV, and a sink written before that column existed takes new runs (SQL: the
column is added; files: the old rows read it as NULL) without a traceback."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from custlens.errors import CustlensError
from serving.sinks import MODEL_VERSION_COLUMNS, SCORES_SCHEMA, SCORES_TABLE, SUCCEEDED, RunEntry, open_sink
from tests.support.databases import postgres_schema_url

AS_OF = date(2025, 1, 1)


def chunk(run_id: str, customers: dict[str, float], currency: str | None, as_of: date = AS_OF) -> pa.Table:
    """Rows as serving.batch writes them: each customer's predicted CLV in `currency`."""
    count = len(customers)
    columns: dict[str, list[object]] = {name: [None] * count for name in SCORES_SCHEMA.names}
    columns.update(
        customer_id=list(customers), as_of=[as_of] * count, predicted_clv_12m=list(customers.values()),
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
    sink = open_sink(uri)
    try:
        frame = sink.scores()
    finally:
        sink.close()
    assert list(frame.columns) == SCORES_SCHEMA.names
    return {row.customer_id: (row.predicted_clv_12m, row.currency) for row in frame.itertuples()}


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
