"""`custlens ingest`: raw exports -> validated, deduplicated rows with one `customer_id` per
person and hashed PII -> the lake (swapped in whole), the quarantine and the ingest report.

Steps: read each file in chunks and check every row (features/validation.py) into a staging
Parquet file; then, set-wise in DuckDB, remove duplicates, link identities, check that every
row's customer exists, count, and write. Nothing reaches the lake unless every table is under
the bad-row threshold.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
from rich.console import Console, Group, RenderableType
from rich.progress import TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from custlens.errors import CustlensError
from custlens.progress import progress_bar
from custlens.settings import Settings
from features.lake.contracts import CONTRACTS, QUARANTINE_REASONS, TableContract
from features.lake.identity import IdentityResult, resolve_identities
from features.lake.pii import Salt, load_salt
from features.lake.readers import ROW_NUMBER, ExportFile, find_exports, iter_chunks
from features.lake.tables import (
    CROSSWALK,
    atomic_file,
    atomic_folder,
    atomic_write_text,
    copy_to_parquet,
    duckdb_connect,
    lake_file,
    sql_literal,
)
from features.lake.validation import DETAIL, REASON, TYPED, ChunkContext, raw_columns, staged_schema, validate_chunk

REPORT_NAME = "ingest_report.json"
# tables whose rows belong to a customer: checked against the accepted customers
CUSTOMER_TABLES = ("orders", "engagement_events", "surveys", "tickets")
# row order of each lake table: by customer and time, so later stages scan one customer at a time
LAKE_ORDER = {
    "orders": ("customer_id", "ordered_at", "order_id"),
    "engagement_events": ("customer_id", "occurred_at", "event_id"),
    "surveys": ("customer_id", "responded_at", "response_id"),
    "tickets": ("customer_id", "opened_at", "ticket_id"),
    "marketing_spend": ("date", "channel", "campaign_id"),
}
PII_NOTE = (
    "customers quarantine keeps email_hash, phone_hash, full_name_hash and birth_date_hash "
    "(HMAC-SHA256) instead of the raw values; no raw email, phone, name or birth date is stored anywhere"
)


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class TableResult:
    """What happened to one input table."""

    table: str
    present: bool
    file: str | None = None
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    extra_columns: tuple[str, ...] = ()

    @property
    def bad_row_share(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.accepted + self.quarantined + self.duplicates

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "file": self.file,
            "rows_in": self.rows_in,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "reconciled": self.reconciled,
            "quarantined_by_reason": self.quarantined_by_reason,
            "bad_row_share": round(self.bad_row_share, 6),
            "extra_columns": list(self.extra_columns),
        }


@dataclass(frozen=True)
class IdentityStats:
    source_ids: int = 0
    customers: int = 0
    source_ids_merged: int = 0
    shared_contacts_ignored: int = 0

    @classmethod
    def of(cls, result: IdentityResult) -> IdentityStats:
        return cls(result.source_ids, result.customers, result.source_ids_merged, result.shared_contacts_ignored)


@dataclass(frozen=True)
class IngestReport:
    """The outcome of one ingest run; `path` is the JSON copy of it."""

    path: Path
    ok: bool
    source_dir: Path
    tables: dict[str, TableResult]
    identity: IdentityStats
    lake_dir: Path
    quarantine_dir: Path
    max_bad_row_share: float
    failed_tables: tuple[str, ...] = ()
    salt_origin: str = "settings"
    seconds: float = 0.0

    @property
    def absent_tables(self) -> tuple[str, ...]:
        return tuple(name for name, result in self.tables.items() if not result.present)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source_dir": str(self.source_dir),
            "tables": {name: result.to_dict() for name, result in self.tables.items()},
            "absent_tables": list(self.absent_tables),
            "identity": {
                "source_ids": self.identity.source_ids,
                "customers": self.identity.customers,
                "source_ids_merged": self.identity.source_ids_merged,
                "shared_contacts_ignored": self.identity.shared_contacts_ignored,
            },
            "reconciliation": "for every present table: rows_in = accepted + quarantined + duplicates",
            "max_bad_row_share": self.max_bad_row_share,
            "failed_tables": list(self.failed_tables),
            "lake_dir": str(self.lake_dir),
            "lake_written": self.ok,
            "quarantine_dir": str(self.quarantine_dir),
            "pii": {"hash": "HMAC-SHA256", "salt_from": self.salt_origin, "note": PII_NOTE},
            "timestamps": "UTC instants (Parquet TIMESTAMP with isAdjustedToUTC=true)",
            "seconds": round(self.seconds, 2),
        }

    def render(self) -> RenderableType:
        table = Table(title="custlens ingest", title_justify="left", show_lines=False)
        for column in ("table", "rows in", "accepted", "quarantined", "duplicates", "bad share", "top reasons"):
            table.add_column(column, justify="left" if column in ("table", "top reasons") else "right")
        for name, result in self.tables.items():
            if not result.present:
                table.add_row(name, "[dim]absent[/]", "", "", "", "", "")
                continue
            reasons = sorted(result.quarantined_by_reason.items(), key=lambda item: (-item[1], item[0]))
            top = ", ".join(f"{reason} {count:,}" for reason, count in reasons[:3])
            share = f"{result.bad_row_share:.2%}"
            if name in self.failed_tables:
                share = f"[bold red]{share}[/]"
            table.add_row(
                name,
                f"{result.rows_in:,}",
                f"{result.accepted:,}",
                f"{result.quarantined:,}",
                f"{result.duplicates:,}",
                share,
                top,
            )
        identity = self.identity
        lines = [
            f"customers: {identity.customers:,} from {identity.source_ids:,} source ids "
            f"({identity.source_ids_merged:,} merged by shared email/phone"
            + (
                f", {identity.shared_contacts_ignored:,} shared placeholder contacts ignored"
                if identity.shared_contacts_ignored
                else ""
            )
            + ")",
            "every table: rows in = accepted + quarantined + duplicates",
            f"lake:       {self.lake_dir}" + ("" if self.ok else "  [bold red](not written: threshold breached)[/]"),
            f"quarantine: {self.quarantine_dir}",
            f"report:     {self.path}",
        ]
        # paths stay on one line, so they can be copied even from a narrow terminal
        return Group(table, *(Text.from_markup(line, overflow="ignore") for line in lines))


# ---------------------------------------------------------------- the run


def ingest(settings: Settings, source_dir: Path, console: Console | None = None) -> IngestReport:
    """Validate the exports in `source_dir`, quarantine bad rows, resolve identities, hash PII
    and replace the lake; raise CustlensError (after writing report and quarantine, with the
    lake untouched) when a table's quarantined share exceeds `ingest.max_bad_row_share`."""
    started = time.perf_counter()
    source_dir = Path(source_dir)
    exports = find_exports(source_dir)
    salt = load_salt(settings, console)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ingest-work-", dir=settings.data_dir))
    try:
        staged = _stage_all(exports, settings, salt, work, console)
        with closing(duckdb_connect(settings.ingest.duckdb_memory_limit, temp_dir=work / "duckdb")) as con:
            with _step(console, "removing duplicates, linking identities"):
                identity = _deduplicate_and_link(con, staged, settings)
            results = {
                table: _count(con, staged[table]) if table in staged else TableResult(table, present=False)
                for table in CONTRACTS
            }
            with _step(console, "writing quarantine"):
                _write_quarantine(con, staged, settings.quarantine_dir)
            max_share = settings.ingest.max_bad_row_share
            report = IngestReport(
                path=settings.reports_dir / REPORT_NAME,
                ok=all(result.bad_row_share <= max_share for result in results.values()),
                source_dir=source_dir,
                tables=results,
                identity=IdentityStats.of(identity),
                lake_dir=settings.lake_dir,
                quarantine_dir=settings.quarantine_dir,
                max_bad_row_share=max_share,
                failed_tables=tuple(name for name, result in results.items() if result.bad_row_share > max_share),
                salt_origin=salt.origin,
                seconds=time.perf_counter() - started,
            )
            if not report.ok:
                _write_report(report)
                raise CustlensError(_threshold_message(report))
            with _step(console, "writing lake"):
                _write_lake(con, staged, settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = replace(report, seconds=time.perf_counter() - started)
    _write_report(report)
    if console is not None:
        total_in = sum(result.rows_in for result in results.values())
        console.print(
            f"ingested {total_in:,} rows in {report.seconds:.1f} s; report written to {report.path}",
            highlight=False,
            soft_wrap=True,
        )
    return report


def _threshold_message(report: IngestReport) -> str:
    parts = []
    for name in report.failed_tables:
        result = report.tables[name]
        parts.append(
            f"{name}: {result.bad_row_share:.2%} of rows quarantined ({result.quarantined:,} of {result.rows_in:,}), "
            f"above max_bad_row_share {report.max_bad_row_share:.2%}"
        )
    return (
        "; ".join(parts)
        + f". The lake was not changed. See the report {report.path} and the quarantine in {report.quarantine_dir}; "
        "fix the export, or raise ingest.max_bad_row_share if these rows are expected."
    )


@contextmanager
def _step(console: Console | None, what: str) -> Iterator[None]:
    started = time.perf_counter()
    if console is None:
        yield
        return
    with console.status(what + " ..."):
        yield
    console.print(f"[green]✓[/] {what} ({time.perf_counter() - started:.1f} s)", highlight=False)


# ---------------------------------------------------------------- staging: read and check every row


@dataclass(frozen=True)
class Staged:
    """One present table after the row checks: its staging Parquet file and what it came from."""

    export: ExportFile
    path: Path
    rows_in: int

    @property
    def table(self) -> str:
        return self.export.table

    @property
    def contract(self) -> TableContract:
        return self.export.contract


def _stage_all(
    exports: dict[str, ExportFile | None], settings: Settings, salt: Salt, work: Path, console: Console | None
) -> dict[str, Staged]:
    progress = progress_bar(
        console,
        TextColumn("{task.fields[rows]:>12,} rows"),
        description="{task.description:<28}",
        counter=TaskProgressColumn(),  # a share: CSV progress counts bytes, not rows
    )
    staged = {}
    with progress:
        for table, export in exports.items():
            if export is None:
                continue
            task = progress.add_task(f"checking {export.path.name}", total=export.progress_total or 1, rows=0)
            context = ChunkContext(
                timezone=settings.business.timezone,
                salt=salt,
                phone_country_code=settings.ingest.phone_country_code,
                phone_min_digits=settings.ingest.phone_min_digits,
                default_source=settings.ingest.default_source.get(table, settings.crm_source)
                if "source" not in export.contract.required_columns
                else None,
            )
            path = work / f"{table}.staged.parquet"
            rows_in = 0
            schema = staged_schema(export.contract, export.columns)
            with pq.ParquetWriter(path, schema) as writer:
                for chunk in iter_chunks(export, settings.ingest.chunk_rows):
                    staged_rows, _ = validate_chunk(chunk.rows, export.contract, context)
                    writer.write_table(staged_rows)
                    rows_in += chunk.rows.num_rows
                    progress.update(task, completed=chunk.progress, rows=rows_in)
            progress.update(task, completed=export.progress_total or 1)
            staged[table] = Staged(export, path, rows_in)
    return staged


# ---------------------------------------------------------------- set-wise work in DuckDB


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key_columns(contract: TableContract, columns: tuple[str, ...]) -> list[str]:
    """The typed columns that identify a row: two rows with the same key are the same thing."""
    if contract.name == "customers":
        return [TYPED + "source", TYPED + "source_customer_id"]
    if contract.name == "marketing_spend":
        # one spend per day and channel, or per day, channel and campaign when campaigns are given
        return [TYPED + "date", TYPED + "channel"] + ([TYPED + "campaign_id"] if "campaign_id" in columns else [])
    assert contract.row_id is not None
    return [TYPED + contract.row_id]


def _mark_duplicates(con: duckdb.DuckDBPyConnection, stage: Staged) -> None:
    """fate_<table>: rows after the first exact copy ('duplicate', removed) and later different
    versions of an id ('duplicate_id_conflict', quarantined). First = earliest in the file."""
    keys = _key_columns(stage.contract, stage.export.columns)
    key_list = ", ".join(_quoted(key) for key in keys)
    required_keys = " AND ".join(f"{_quoted(key)} IS NOT NULL" for key in keys[:2])
    same_key = " AND ".join(f"keyed.{_quoted(key)} IS NOT DISTINCT FROM r.{_quoted(key)}" for key in keys)
    raw = ", ".join(_quoted(name) for name in raw_columns(stage.contract, stage.export.columns))
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE fate_{stage.table} AS
        WITH keyed AS (
            SELECT {ROW_NUMBER}, {key_list}, {raw}
            FROM read_parquet({sql_literal(stage.path)})
            WHERE {required_keys}
        ),
        repeated_keys AS (
            SELECT {key_list} FROM keyed GROUP BY ALL HAVING count(*) > 1
        ),
        repeated AS (
            SELECT keyed.* FROM keyed SEMI JOIN repeated_keys AS r ON {same_key}
        ),
        copies AS (
            SELECT {ROW_NUMBER}, {key_list},
                   row_number() OVER (PARTITION BY {key_list}, {raw} ORDER BY {ROW_NUMBER}) AS copy_number
            FROM repeated
        ),
        versions AS (
            SELECT {ROW_NUMBER}, copy_number,
                   row_number() OVER (PARTITION BY {key_list}, copy_number = 1 ORDER BY {ROW_NUMBER}) AS version_number
            FROM copies
        )
        SELECT {ROW_NUMBER},
               CASE WHEN copy_number > 1 THEN 'duplicate' ELSE 'duplicate_id_conflict' END AS fate
        FROM versions
        WHERE copy_number > 1 OR version_number > 1
        """
    )


def _deduplicate_and_link(
    con: duckdb.DuckDBPyConnection, staged: dict[str, Staged], settings: Settings
) -> IdentityResult:
    """Mark duplicates of every table, resolve identities over the accepted customers, then
    classify every row (views classified_<table>)."""
    for stage in staged.values():
        _mark_duplicates(con, stage)
    identity = _link_identities(con, staged["customers"], settings)
    for stage in staged.values():
        _classify(con, stage)
    return identity


def _link_identities(con: duckdb.DuckDBPyConnection, customers: Staged, settings: Settings) -> IdentityResult:
    """The crosswalk of every accepted customer source id to its customer_id (table `crosswalk`)."""
    accepted = con.sql(
        f"""
        SELECT {TYPED}source AS source, {TYPED}source_customer_id AS source_customer_id,
               {TYPED}email_hash AS email_key, {TYPED}phone_hash AS phone_key
        FROM read_parquet({sql_literal(customers.path)}) AS staged
        ANTI JOIN fate_customers USING ({ROW_NUMBER})
        WHERE staged.{REASON} IS NULL
        """
    ).to_arrow_table()
    result = resolve_identities(accepted, settings.ingest.max_ids_per_contact)
    con.register("identity_crosswalk", result.crosswalk)
    con.execute("CREATE OR REPLACE TEMP TABLE crosswalk AS SELECT * FROM identity_crosswalk")
    con.unregister("identity_crosswalk")
    return result


def _classify(con: duckdb.DuckDBPyConnection, stage: Staged) -> None:
    """classified_<table>: every staged row with its fate: duplicate, or reason (null = accepted)."""
    keys = _key_columns(stage.contract, stage.export.columns)
    key_names = ",".join(key.removeprefix(TYPED) for key in keys)
    key_value = " || '|' || ".join(f"coalesce(CAST(s.{_quoted(key)} AS VARCHAR), '')" for key in keys)
    owned = stage.table in CUSTOMER_TABLES or stage.table == "customers"
    unknown, unknown_detail = "false", "NULL"
    if stage.table in CUSTOMER_TABLES:
        unknown = f"(s.{TYPED}source IS NOT NULL AND s.{TYPED}source_customer_id IS NOT NULL AND x.customer_id IS NULL)"
        unknown_detail = (
            f"CASE WHEN is_unknown_customer THEN 'source_customer_id: unknown_customer (' "
            f"|| {TYPED}source || '|' || {TYPED}source_customer_id || ')' END"
        )
    join = (
        f"LEFT JOIN crosswalk AS x ON x.source = s.{TYPED}source AND x.source_customer_id = s.{TYPED}source_customer_id"
        if owned
        else ""
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW classified_{stage.table} AS
        WITH checked AS (
            SELECT s.*,
                   {"x.customer_id" if owned else "NULL::VARCHAR"} AS customer_id,
                   coalesce(f.fate = 'duplicate', false) AS is_duplicate,
                   coalesce(f.fate = 'duplicate_id_conflict', false) AS is_conflict,
                   {unknown} AS is_unknown_customer,
                   {key_value} AS row_key
            FROM read_parquet({sql_literal(stage.path)}) AS s
            LEFT JOIN fate_{stage.table} AS f USING ({ROW_NUMBER})
            {join}
        )
        SELECT * EXCLUDE (is_conflict, is_unknown_customer, row_key),
               CASE WHEN NOT is_duplicate THEN coalesce(
                   {REASON},
                   CASE WHEN is_conflict THEN 'duplicate_id_conflict' END,
                   CASE WHEN is_unknown_customer THEN 'unknown_customer' END
               ) END AS reason,
               CASE WHEN NOT is_duplicate THEN nullif(concat_ws('; ',
                   {DETAIL},
                   CASE WHEN is_conflict THEN '{key_names}: duplicate_id_conflict (' || row_key || ')' END,
                   {unknown_detail}
               ), '') END AS reason_detail
        FROM checked
        """
    )


def _count(con: duckdb.DuckDBPyConnection, stage: Staged) -> TableResult:
    rows = con.sql(f"SELECT is_duplicate, reason, count(*) FROM classified_{stage.table} GROUP BY ALL").fetchall()
    duplicates = sum(n for is_duplicate, _, n in rows if is_duplicate)
    accepted = sum(n for is_duplicate, reason, n in rows if not is_duplicate and reason is None)
    by_reason = {
        reason: n
        for reason in QUARANTINE_REASONS
        for is_duplicate, code, n in rows
        if not is_duplicate and code == reason
    }
    result = TableResult(
        table=stage.table,
        present=True,
        file=str(stage.export.path),
        rows_in=stage.rows_in,
        accepted=accepted,
        quarantined=sum(by_reason.values()),
        duplicates=duplicates,
        quarantined_by_reason=by_reason,
        extra_columns=stage.export.extra_columns,
    )
    if not result.reconciled:  # every row must be accounted for; anything else is a bug here
        raise RuntimeError(f"ingest lost rows of {stage.table}: {result.to_dict()}")
    return result


# ---------------------------------------------------------------- outputs


def _write_quarantine(con: duckdb.DuckDBPyConnection, staged: dict[str, Staged], quarantine_dir: Path) -> None:
    """<quarantine>/<table>.parquet per present table (replaced each run); absent tables' old files go."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    for table in CONTRACTS:
        target = lake_file(quarantine_dir, table)
        if table not in staged:
            target.unlink(missing_ok=True)
            continue
        stage = staged[table]
        raw = ", ".join(_quoted(name) for name in raw_columns(stage.contract, stage.export.columns))
        with atomic_file(target) as partial:
            copy_to_parquet(
                con,
                f"""
                SELECT {raw}, {sql_literal(stage.export.path)} AS _file, {ROW_NUMBER}, reason, reason_detail
                FROM classified_{table}
                WHERE reason IS NOT NULL
                ORDER BY {ROW_NUMBER}
                """,
                partial,
            )


def _lake_columns(contract: TableContract) -> str:
    columns = []
    for column in contract.columns:
        value = f"{TYPED}{column.name}"
        if column.kind == "decimal":
            value = f"CAST({value} AS DECIMAL(18, 2))"
        columns.append(f"{value} AS {_quoted(column.name)}")
    return ", ".join(columns)


def _write_lake(con: duckdb.DuckDBPyConnection, staged: dict[str, Staged], settings: Settings) -> None:
    """Write the whole lake into a new folder, then swap it in: a reader sees the old lake or the new."""
    with atomic_folder(settings.lake_dir) as new_lake:
        copy_to_parquet(
            con,
            # signup_at per source account lets features count only the accounts opened by a cutoff
            f"""
            SELECT crosswalk.source, crosswalk.source_customer_id, crosswalk.customer_id, accounts.signup_at
            FROM crosswalk
            LEFT JOIN (
                SELECT {TYPED}source AS source, {TYPED}source_customer_id AS source_customer_id,
                       min({TYPED}signup_at) AS signup_at
                FROM classified_customers
                WHERE reason IS NULL AND NOT is_duplicate
                GROUP BY ALL
            ) AS accounts USING (source, source_customer_id)
            ORDER BY customer_id, source, source_customer_id
            """,
            lake_file(new_lake, CROSSWALK),
        )
        copy_to_parquet(con, _customers_query(settings.crm_source), lake_file(new_lake, "customers"))
        for table, stage in staged.items():
            if table == "customers":
                continue
            owner = "customer_id, " if table in CUSTOMER_TABLES else ""
            order = ", ".join(_quoted(name) for name in LAKE_ORDER[table])
            copy_to_parquet(
                con,
                f"""
                SELECT {owner}{_lake_columns(stage.contract)}
                FROM classified_{table}
                WHERE reason IS NULL AND NOT is_duplicate
                ORDER BY {order}
                """,
                lake_file(new_lake, table),
            )


def _customers_query(crm_source: str) -> str:
    """One row per customer_id; contact hashes and attributes from the CRM record when it has
    them, else from the first source alphabetically; acquisition channel from the earliest signup."""
    # arg_min over a struct key instead of first(... ORDER BY ...): an ordered aggregate holds every
    # group's rows in memory and ran out of it at 1,000,000 customers; arg_min streams and spills.
    preferred = "{'crm_first': NOT from_crm, 'source': source, 'id': source_customer_id}"
    earliest = "{'signup_at': signup_at, 'crm_first': NOT from_crm, 'source': source, 'id': source_customer_id}"

    def pick(column: str, key: str = preferred) -> str:
        return f"arg_min({column}, {key}) FILTER (WHERE {column} IS NOT NULL) AS {column}"

    return f"""
        WITH accepted AS (
            SELECT customer_id,
                   {TYPED}source AS source,
                   {TYPED}source_customer_id AS source_customer_id,
                   {TYPED}source = {sql_literal(crm_source)} AS from_crm,
                   {TYPED}signup_at AS signup_at,
                   {TYPED}email_hash AS email_hash,
                   {TYPED}phone_hash AS phone_hash,
                   {TYPED}city AS city,
                   {TYPED}gender AS gender,
                   {TYPED}birth_year AS birth_year,
                   {TYPED}acquisition_channel AS acquisition_channel,
                   {TYPED}marketing_opt_in AS marketing_opt_in
            FROM classified_customers
            WHERE reason IS NULL AND NOT is_duplicate
        )
        SELECT customer_id,
               min(signup_at) AS signup_at,
               {pick("email_hash")},
               {pick("phone_hash")},
               {pick("city")},
               {pick("gender")},
               {pick("birth_year")},
               {pick("acquisition_channel", earliest)},
               {pick("marketing_opt_in")},
               count(*) AS n_source_ids,
               array_to_string(list_sort(list_distinct(list(source))), ',') AS sources
        FROM accepted
        GROUP BY customer_id
        ORDER BY customer_id
    """


def _write_report(report: IngestReport) -> None:
    atomic_write_text(report.path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
