"""Staging: read each export in chunks, check every row (validation.py) into a staging Parquet
file, and derive what a real export lacks: constant source and status, row ids from the row's
content, and the customers table from the orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import Progress, TaskProgressColumn, TextColumn

from custlens.progress import progress_bar
from custlens.settings import Settings
from features.lake.contracts import CONTRACTS, TableContract
from features.lake.money import currency_symbols
from features.lake.pii import Salt
from features.lake.readers import ROW_NUMBER, ExportFile, iter_chunks
from features.lake.tables import copy_to_parquet, sql_literal
from features.lake.validation import (
    REASON,
    TYPED,
    ChunkContext,
    ChunkStats,
    PlausibleTime,
    raw_columns,
    staged_schema,
    validate_chunk,
)

_DERIVED_ID_PREFIX = {"orders": "o", "engagement_events": "e", "surveys": "r", "tickets": "t"}


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------- staging: read and check every row


@dataclass(frozen=True)
class Staged:
    """One table after the row checks: its staging Parquet file and what it came from."""

    table: str
    columns: tuple[str, ...]  # the contract columns read (or given as constants)
    path: Path
    rows_in: int
    origin: str  # the file (or query) shown in the report and in the quarantine's _file
    extra_columns: tuple[str, ...] = ()
    identity_columns: tuple[str, ...] = ()
    derived: dict[str, str] = field(default_factory=dict)  # contract column -> how it was made
    mapping: dict[str, str] = field(default_factory=dict)  # contract column -> where its values came from
    stats: ChunkStats | None = None

    @property
    def contract(self) -> TableContract:
        return CONTRACTS[self.table]


def stage_all(
    exports: dict[str, ExportFile | None],
    settings: Settings,
    salt: Salt,
    work: Path,
    console: Console | None,
    now: datetime | None = None,
) -> dict[str, Staged]:
    """Every export validated into a staged Parquet file; times judged plausible against `now`."""
    plausible = PlausibleTime.of(settings.ingest.earliest, settings.ingest.future_tolerance, now or datetime.now(UTC))
    progress = progress_bar(
        console,
        TextColumn("{task.fields[rows]:>12,} rows"),
        description="{task.description:<28}",
        counter=TaskProgressColumn(),  # a share: CSV progress counts bytes, not rows
    )
    staged: dict[str, Staged] = {}
    with progress:
        for table, export in exports.items():
            if export is None:
                continue
            export, derived = _with_derived_constants(export, staged, settings)
            staged[table] = _stage(export, derived, settings, salt, work, progress, plausible)
    if "customers" not in staged:
        staged["customers"] = _derive_customers(staged["orders"], work)
    return staged


def _with_derived_constants(
    export: ExportFile, staged: dict[str, Staged], settings: Settings
) -> tuple[ExportFile, dict[str, str]]:
    """The export with constants for the required columns its file lacks (source, status); the
    rest of `export.derived` (a row id) is made after staging."""
    derived: dict[str, str] = {}
    constants: dict[str, str] = {}
    for column in export.derived:
        if column == "source":
            constants["source"], derived["source"] = _default_source(export.table, staged, settings)
        elif column == "status":
            constants["status"], derived["status"] = "completed", "completed (the file has no status)"
        else:  # the row id
            derived[column] = "hash of the row's values and its occurrence (identical rows stay separate)"
    return (export.with_defaults(constants) if constants else export), derived


def _default_source(table: str, staged: dict[str, Staged], settings: Settings) -> tuple[str, str]:
    """The source system a table's ids belong to when its file does not say: the configured
    default, else the customers export's single source, else crm_source."""
    configured = settings.ingest.default_source.get(table)
    if configured:
        return configured, f"{configured} (ingest.default_source.{table})"
    customers = staged.get("customers")
    if customers is not None:
        sources = duckdb.sql(
            f"SELECT DISTINCT {TYPED}source FROM read_parquet({sql_literal(customers.path)}) "
            f"WHERE {TYPED}source IS NOT NULL LIMIT 2"
        ).fetchall()
        if len(sources) == 1:
            return sources[0][0], f"{sources[0][0]} (the customers export's only source)"
    return settings.crm_source, f"{settings.crm_source} (crm_source; set ingest.tables.{table}.defaults.source)"


def _context(export: ExportFile, settings: Settings, salt: Salt, plausible: PlausibleTime) -> ChunkContext:
    source = export.source
    optional_source = "source" not in export.contract.required_columns
    return ChunkContext(
        timezone=settings.business.timezone,
        salt=salt,
        phone_country_code=settings.ingest.phone_country_code,
        phone_min_digits=settings.ingest.phone_min_digits,
        default_source=settings.ingest.default_source.get(export.table, settings.crm_source)
        if optional_source
        else None,
        timestamp_format=source.timestamp_format,
        date_order=source.date_order,
        decimal=source.csv.decimal,
        thousands=source.csv.thousands,
        currency_marks=currency_symbols(settings.business.currency),
        identity_columns=export.identity_columns,
        table_label=f"{export.table} ({export.origin})",
        plausible=plausible,
    )


def _stage(
    export: ExportFile,
    derived: dict[str, str],
    settings: Settings,
    salt: Salt,
    work: Path,
    progress: Progress,
    plausible: PlausibleTime,
) -> Staged:
    task = progress.add_task(f"checking {export.origin}"[:28], total=export.progress_total or 1, rows=0)
    context = _context(export, settings, salt, plausible)
    path = work / f"{export.table}.staged.parquet"
    rows_in = 0
    stats = ChunkStats()
    schema = staged_schema(export.contract, export.columns, export.identity_columns)
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in iter_chunks(export, settings.ingest.chunk_rows):
            rows, chunk_stats = validate_chunk(chunk.rows, export.contract, context)
            writer.write_table(rows)
            stats = stats.merge(chunk_stats)
            rows_in += chunk.rows.num_rows
            progress.update(task, completed=chunk.progress, rows=rows_in)
    progress.update(task, completed=export.progress_total or 1)
    mapping = {column: f"column {name}" for column, name in export.mapping.items()}
    mapping |= {column: f"constant {value!r}" for column, value in export.defaults.items() if column not in mapping}
    return Staged(
        table=export.table,
        columns=export.columns,
        path=path,
        rows_in=rows_in,
        origin=str(export.path) if len(export.paths) == 1 else export.origin,
        extra_columns=export.extra_columns,
        identity_columns=export.identity_columns,
        derived=derived,
        mapping=mapping,
        stats=stats,
    )


def _derive_customers(orders: Staged, work: Path) -> Staged:
    """No customers export: one customer per (source, source_customer_id) of the orders that passed
    their row checks, signed up at their first order."""
    columns = ("source", "source_customer_id", "signup_at")
    schema = staged_schema(CONTRACTS["customers"], columns)
    found = duckdb.sql(
        f"""
        SELECT {TYPED}source AS source, {TYPED}source_customer_id AS source_customer_id,
               min({TYPED}ordered_at) AS first_order
        FROM read_parquet({sql_literal(orders.path)})
        WHERE {REASON} IS NULL AND {TYPED}source IS NOT NULL AND {TYPED}source_customer_id IS NOT NULL
        GROUP BY ALL
        ORDER BY source, source_customer_id
        """
    ).to_arrow_table()
    n = found.num_rows
    first_order = found.column("first_order").cast(pa.timestamp("us", tz="UTC"))
    values = {
        ROW_NUMBER: pa.array(range(1, n + 1), type=pa.int64()),
        "source": found.column("source"),
        "source_customer_id": found.column("source_customer_id"),
        "signup_at": first_order.cast(pa.string()),
        TYPED + "source": found.column("source"),
        TYPED + "source_customer_id": found.column("source_customer_id"),
        TYPED + "signup_at": first_order,
    }
    table = pa.table({f.name: values[f.name] if f.name in values else pa.nulls(n, f.type) for f in schema}, schema)
    path = work / "customers.staged.parquet"
    pq.write_table(table, path)
    return Staged(
        table="customers",
        columns=columns,
        path=path,
        rows_in=n,
        origin="(derived from orders)",
        derived={"table": "one customer per source_customer_id in orders, signup_at = first order"},
    )


def derive_row_ids(con: duckdb.DuckDBPyConnection, staged: dict[str, Staged], work: Path) -> None:
    """A file without its row id (a transaction log without order numbers) gets a stable one: a hash
    of the row's values and of how many identical rows came before it. The same file gives the same
    ids on every run; identical rows stay separate rows (a log cannot tell them apart)."""
    for table, stage in staged.items():
        row_id = stage.contract.row_id
        if row_id is None or row_id not in stage.derived:
            continue
        raw = raw_columns(stage.contract, stage.columns)
        content = "concat_ws(chr(31), " + ", ".join(f"coalesce({quoted(name)}, '')" for name in raw) + ")"
        rewritten = work / f"{table}.ids.parquet"
        copy_to_parquet(
            con,
            f"""
            WITH keyed AS (
                SELECT *, {content} AS _content FROM read_parquet({sql_literal(stage.path)})
            )
            SELECT * EXCLUDE (_content) REPLACE (
                {sql_literal(_DERIVED_ID_PREFIX[table])} || substr(sha256(_content || chr(30) || CAST(
                    row_number() OVER (PARTITION BY _content ORDER BY {ROW_NUMBER}) AS VARCHAR)), 1, 20)
                AS {quoted(TYPED + row_id)}
            )
            FROM keyed
            ORDER BY {ROW_NUMBER}
            """,
            rewritten,
        )
        rewritten.replace(stage.path)
