"""`custlens ingest`: raw exports -> validated, deduplicated rows with one `customer_id` per
person and hashed PII -> the lake (swapped in whole), the quarantine and the ingest report.

Steps: find each table's file (or query) as `ingest.tables` describes it, read it in chunks and
check every row (validation.py) into a staging Parquet file; derive what a real export lacks
(row ids, source, status, the customers table); then, set-wise in DuckDB, remove duplicates,
link identities, put the currency right, check that every row's customer exists, count, and write.
Nothing reaches the lake unless every table is under the bad-row threshold; `--check` stops
before writing anything.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
from rich.console import Console

from custlens.errors import CustlensError
from custlens.runs import RunOwner
from custlens.settings import Settings
from features.kpis.cube import build_kpi_cube, kpi_dir
from features.lake.contracts import CONTRACTS, QUARANTINE_REASONS, TableContract
from features.lake.guards import check_drop_tables, lake_rows, refusals
from features.lake.identity import IdentityResult, resolve_identities
from features.lake.money import check_currency, decimal_type, minor_units
from features.lake.pii import Salt, load_salt, salt_file
from features.lake.readers import ROW_NUMBER, ExportFile, find_exports, first_line
from features.lake.report import REPORT_NAME, Example, IdentityStats, IngestReport, Money, TableResult
from features.lake.staging import Staged, derive_row_ids, quoted, stage_all
from features.lake.tables import (
    CROSSWALK,
    GUEST_ORDERS,
    Business,
    atomic_file,
    atomic_write_text,
    copy_to_parquet,
    duckdb_connect,
    lake_file,
    sql_literal,
    swap_folder,
    write_business,
)
from features.lake.validation import DETAIL, REASON, TYPED, ChunkStats, identity_field, raw_columns

# tables whose rows belong to a customer: checked against the accepted customers
CUSTOMER_TABLES = ("orders", "engagement_events", "surveys", "tickets")
# row order of each lake table: by customer and time, so later stages scan one customer at a time
LAKE_ORDER = {
    "orders": ("customer_id", "ordered_at", "order_id"),
    GUEST_ORDERS: ("ordered_at", "order_id"),
    "engagement_events": ("customer_id", "occurred_at", "event_id"),
    "surveys": ("customer_id", "responded_at", "response_id"),
    "tickets": ("customer_id", "opened_at", "ticket_id"),
    "marketing_spend": ("date", "channel", "campaign_id"),
}
TIME_COLUMN = {
    "customers": "signup_at",
    "orders": "ordered_at",
    "engagement_events": "occurred_at",
    "surveys": "responded_at",
    "tickets": "opened_at",
    "marketing_spend": "date",
}
AMOUNT_COLUMNS = ("net_amount", "gross_amount", "discount_amount")  # of orders, converted with the rates
CROSSWALK_KEY = "crosswalk_key"
WORK_PREFIX = ".ingest-work-"  # + the ingest's pid: a folder whose process is gone is stale


# ---------------------------------------------------------------- the run


def ingest(
    settings: Settings,
    source_dir: Path,
    console: Console | None = None,
    check: bool = False,
    allow_shrink: bool = False,
    drop_tables: tuple[str, ...] = (),
) -> IngestReport:
    """Validate the exports in `source_dir`, quarantine bad rows, resolve identities, hash PII,
    build the new lake and its KPI cube in a staging folder and swap both in; raise CustlensError,
    with the lake and cube untouched and the report saying `ok: false`, when a table's quarantined
    share exceeds `ingest.max_bad_row_share`, when the export would shrink the lake (guards.py;
    `allow_shrink`, `drop_tables` say a shrink is meant), or when any later step fails.

    `check`: a dry run that reads and validates everything and returns the report of what it
    detected and assumed, writing nothing (no lake, quarantine, report or salt file).
    """
    source_dir = Path(source_dir)
    run = _Run()
    try:
        exports = find_exports(source_dir, settings)
        dropped = check_drop_tables(drop_tables, (table for table, export in exports.items() if export is not None))
        salt = _salt(settings, console, check)
        if not check:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            _remove_stale_work(settings.data_dir)
        work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=None if check else settings.data_dir))
        try:
            report = _ingest(settings, source_dir, exports, salt, work, console, check, allow_shrink, dropped, run)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException as exc:
        if not check:  # a report saying ok: true from an earlier run must not outlive a failed one
            _write_failure(settings, source_dir, run, exc)
        raise
    if not check and console is not None:
        results = report.tables.values()
        total_in = sum(result.rows_in for result in results if "table" not in result.derived)
        console.print(
            f"ingested {total_in:,} rows in {report.seconds:.1f} s; report written to {report.path}",
            highlight=False,
            soft_wrap=True,
        )
    return report


def _ingest(
    settings: Settings,
    source_dir: Path,
    exports: dict[str, ExportFile | None],
    salt: Salt,
    work: Path,
    console: Console | None,
    check: bool,
    allow_shrink: bool,
    dropped: tuple[str, ...],
    run: _Run,
) -> IngestReport:
    staged = stage_all(exports, settings, salt, work, console)
    with closing(duckdb_connect(settings.ingest.duckdb_memory_limit, temp_dir=work / "duckdb")) as con:
        business = _business(con, staged, settings)
        with _step(console, "removing duplicates, linking identities"):
            derive_row_ids(con, staged, work)
            _load_exchange_rates(con, settings, source_dir)
            identity = _deduplicate_and_link(con, staged, settings, source_dir, business)
        results = {
            table: _count(con, staged[table], business) if table in staged else TableResult(table, present=False)
            for table in CONTRACTS
        }
        identity_stats = IdentityStats.of(identity, _identity_names(settings))
        before = lake_rows(settings.lake_dir)
        after = {table: result.accepted for table, result in results.items() if result.present}
        after["customers"] = identity_stats.source_ids
        max_share = settings.ingest.max_bad_row_share
        failed = tuple(name for name, result in results.items() if result.bad_row_share > max_share)
        refused = refusals(before, after, settings.ingest.max_shrink_share, allow_shrink, dropped)
        report = IngestReport(
            path=settings.reports_dir / REPORT_NAME,
            ok=not failed and not refused,
            source_dir=source_dir,
            tables=results,
            identity=identity_stats,
            business=business,
            money=_money(con),
            lake_dir=settings.lake_dir,
            quarantine_dir=settings.quarantine_dir,
            max_bad_row_share=max_share,
            failed_tables=failed,
            refused=refused,
            lake_rows={table: (before.get(table), after.get(table)) for table in CONTRACTS if table in before},
            dropped_tables=dropped,
            salt_origin=salt.origin,
            seconds=time.perf_counter() - run.started,
            check_only=check,
        )
        run.report = report
        if check:
            return replace(report, seconds=time.perf_counter() - run.started)
        with _step(console, "writing quarantine"):
            _write_quarantine(con, staged, settings.quarantine_dir)
        if not report.ok:
            _write_report(report)
            run.failure_written = True
            raise CustlensError(report.failure_message())
        # the new lake and its KPI cube are built side by side in the staging folder, then swapped in
        staging = settings.model_copy(update={"data_dir": work / "data"})
        with _step(console, "writing lake"):
            staging.lake_dir.mkdir(parents=True)
            _write_lake(con, staged, staging.lake_dir, settings.crm_source, business, results["orders"].guests)
    with _step(console, "building the KPI cube"):
        build_kpi_cube(staging)
    report = replace(report, seconds=time.perf_counter() - run.started)
    _write_report(report)  # before the swap: a lake is never newer than the report that describes it
    swap_folder(staging.lake_dir, settings.lake_dir)
    swap_folder(kpi_dir(staging), kpi_dir(settings))
    return report


@dataclass
class _Run:
    """How far one ingest got: the report once counted, and whether its failure is already written."""

    started: float = field(default_factory=time.perf_counter)
    report: IngestReport | None = None
    failure_written: bool = False


def _write_failure(settings: Settings, source_dir: Path, run: _Run, exc: BaseException) -> None:
    """The report of a run that failed: `ok: false` and why, written whatever stage it failed in."""
    if run.failure_written:
        return  # with the refusals or the failed tables
    error = str(exc) if isinstance(exc, CustlensError) else f"{type(exc).__name__}: {exc}"
    if run.report is not None:
        _write_report(replace(run.report, ok=False, error=error))
        return
    failure = {"ok": False, "error": error, "source_dir": str(source_dir), "lake_written": False}
    atomic_write_text(settings.reports_dir / REPORT_NAME, json.dumps(failure, indent=2, ensure_ascii=False) + "\n")


def _remove_stale_work(data_dir: Path) -> None:
    """Staging folders of ingests that were killed (their process is gone) are removed; a running
    ingest's folder (its process alive) is left alone."""
    for folder in data_dir.glob(f"{WORK_PREFIX}*"):
        pid = folder.name.removeprefix(WORK_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not RunOwner(socket.gethostname(), int(pid)).is_gone():
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _salt(settings: Settings, console: Console | None, check: bool) -> Salt:
    """The PII salt; a dry run without one uses a throwaway salt instead of creating the file."""
    if check and not (settings.pii_salt and settings.pii_salt.get_secret_value()) and not salt_file(settings).exists():
        return Salt(secrets.token_hex(32).encode("utf-8"), "ephemeral")
    return load_salt(settings, console)


@contextmanager
def _step(console: Console | None, what: str) -> Iterator[None]:
    started = time.perf_counter()
    if console is None:
        yield
        return
    with console.status(what + " ..."):
        yield
    console.print(f"[green]✓[/] {what} ({time.perf_counter() - started:.1f} s)", highlight=False)


# ---------------------------------------------------------------- the business: time zone and currency


def _business(con: duckdb.DuckDBPyConnection, staged: dict[str, Staged], settings: Settings) -> Business:
    """The time zone and currency the data is read in: the configured ones, else what the data says
    (offsets on every timestamp: a UTC calendar; one code in the orders' currency column), else a
    refusal naming the setting."""
    configured = settings.business
    if configured.timezone:
        zone, zone_from = configured.timezone, "business.timezone"
    else:  # validation refused every naive or date-only value, so every instant carried its offset
        zone, zone_from = "UTC", "every timestamp carried its offset; set business.timezone for local days"
    if configured.currency:
        currency, currency_from = configured.currency, "business.currency"
    else:
        currency, currency_from = _currency_from_data(con, staged["orders"]), "the orders' currency column"
    return Business(zone, currency, minor_units(currency), zone_from, currency_from)


def _currency_from_data(con: duckdb.DuckDBPyConnection, orders: Staged) -> str:
    if "currency" not in orders.columns:
        raise CustlensError(
            "business.currency is not set and the orders have no currency column: set business.currency "
            "to the ISO 4217 code of the amounts (e.g. USD) in your config"
        )
    found = con.sql(
        f"SELECT {TYPED}currency, count(*) FROM read_parquet({sql_literal(orders.path)}) "
        f"WHERE {REASON} IS NULL AND {TYPED}currency IS NOT NULL GROUP BY ALL ORDER BY 2 DESC"
    ).fetchall()
    if len(found) != 1:
        seen = ", ".join(f"{code} ({count:,} rows)" for code, count in found[:5]) or "none"
        raise CustlensError(
            f"business.currency is not set and the orders' currency column holds {seen}: set business.currency "
            "(rows in other currencies are then quarantined as currency_mismatch, or converted with "
            "ingest.exchange_rates)"
        )
    try:
        return check_currency(found[0][0])
    except ValueError as exc:
        raise CustlensError(f"the orders' currency column: {exc}; set business.currency") from None


def _load_exchange_rates(con: duckdb.DuckDBPyConnection, settings: Settings, source_dir: Path) -> None:
    """Table `rates` (currency, day, rate): 1 unit of currency = rate units of the business's, from day."""
    con.execute("CREATE OR REPLACE TEMP TABLE rates (currency VARCHAR, day DATE, rate DOUBLE)")
    name = settings.ingest.exchange_rates
    if not name:
        return
    path = source_dir / name
    if not path.is_file():
        raise CustlensError(f"ingest.exchange_rates: {path} does not exist")
    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
    try:
        con.execute(
            f"""
            INSERT INTO rates
            SELECT upper(trim(CAST(currency AS VARCHAR))), CAST(date AS DATE), CAST(rate AS DOUBLE)
            FROM {reader}({sql_literal(path)})
            """
        )
    except duckdb.Error as exc:
        raise CustlensError(
            f"ingest.exchange_rates: {path} must have the columns date, currency, rate ({first_line(exc)})"
        ) from None
    bad = con.sql("SELECT count(*) FROM rates WHERE rate IS NULL OR NOT isfinite(rate) OR rate <= 0").fetchone()
    if bad and bad[0]:
        raise CustlensError(f"ingest.exchange_rates: {path} has {bad[0]:,} rows without a positive rate")


# ---------------------------------------------------------------- set-wise work in DuckDB


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
    keys = _key_columns(stage.contract, stage.columns)
    key_list = ", ".join(quoted(key) for key in keys)
    required_keys = " AND ".join(f"{quoted(key)} IS NOT NULL" for key in keys[:2])
    same_key = " AND ".join(f"keyed.{quoted(key)} IS NOT DISTINCT FROM r.{quoted(key)}" for key in keys)
    raw = ", ".join(quoted(name) for name in raw_columns(stage.contract, stage.columns))
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
    con: duckdb.DuckDBPyConnection,
    staged: dict[str, Staged],
    settings: Settings,
    source_dir: Path,
    business: Business,
) -> IdentityResult:
    """Mark duplicates of every table, resolve identities over the accepted customers, then
    classify every row (views classified_<table>)."""
    for stage in staged.values():
        _mark_duplicates(con, stage)
    identity = _link_identities(con, staged["customers"], settings, source_dir)
    for stage in staged.values():
        _classify(con, stage, business, customers_derived="table" in staged["customers"].derived)
    return identity


def _identity_names(settings: Settings) -> tuple[str, ...]:
    return tuple(settings.ingest.identity_keys) + (
        (f"crosswalk {settings.ingest.crosswalk}",) if settings.ingest.crosswalk else ()
    )


def _link_identities(
    con: duckdb.DuckDBPyConnection, customers: Staged, settings: Settings, source_dir: Path
) -> IdentityResult:
    """The crosswalk of every accepted customer source id to its customer_id (table `crosswalk`):
    linked by shared email or phone, by the declared identity keys and by a given crosswalk."""
    keys = [identity_field(name) for name in customers.identity_columns]
    # one row per source id: a declared key may differ between an id's rows only if it was given twice,
    # which dedupe already quarantined; take any
    key_select = "".join(f", {quoted(key)} AS {quoted(f'key_{i}')}" for i, key in enumerate(keys))
    accepted = con.sql(
        f"""
        SELECT {TYPED}source AS source, {TYPED}source_customer_id AS source_customer_id,
               {TYPED}email_hash AS email_key, {TYPED}phone_hash AS phone_key{key_select}
        FROM read_parquet({sql_literal(customers.path)}) AS staged
        ANTI JOIN fate_customers USING ({ROW_NUMBER})
        WHERE staged.{REASON} IS NULL
        """
    )
    trusted = [f"key_{i}" for i in range(len(keys))]
    if settings.ingest.crosswalk:
        con.register("accepted_ids", accepted.to_arrow_table())
        accepted = con.sql(
            f"""
            SELECT accepted_ids.*, given.person_key AS {CROSSWALK_KEY}
            FROM accepted_ids
            LEFT JOIN ({_crosswalk_sql(source_dir / settings.ingest.crosswalk)}) AS given
              USING (source, source_customer_id)
            """
        )
        trusted.append(CROSSWALK_KEY)
    result = resolve_identities(accepted.to_arrow_table(), settings.ingest.max_ids_per_contact, tuple(trusted))
    con.register("identity_crosswalk", result.crosswalk)
    con.execute("CREATE OR REPLACE TEMP TABLE crosswalk AS SELECT * FROM identity_crosswalk")
    con.unregister("identity_crosswalk")
    return result


def _crosswalk_sql(path: Path) -> str:
    """A business's own resolved identities: one (source, source_customer_id, person_key) per row."""
    if not path.is_file():
        raise CustlensError(f"ingest.crosswalk: {path} does not exist")
    reader = f"read_parquet({sql_literal(path)})"
    if path.suffix != ".parquet":
        reader = f"read_csv({sql_literal(path)}, all_varchar = true)"
    query = (
        "SELECT DISTINCT CAST(source AS VARCHAR) AS source, CAST(source_customer_id AS VARCHAR) AS "
        f"source_customer_id, CAST(person_key AS VARCHAR) AS person_key FROM {reader}"
    )
    try:
        duckdb.sql(f"SELECT * FROM ({query}) LIMIT 0").fetchall()
    except duckdb.Error as exc:
        raise CustlensError(
            f"ingest.crosswalk: {path} must have the columns source, source_customer_id, person_key ({first_line(exc)})"
        ) from None
    return query


def _classify(
    con: duckdb.DuckDBPyConnection, stage: Staged, business: Business, customers_derived: bool = False
) -> None:
    """classified_<table>: every staged row with its fate: duplicate, or reason (null = accepted),
    whether it is a guest order, and for orders the rate that converts its amounts."""
    keys = _key_columns(stage.contract, stage.columns)
    key_names = ",".join(key.removeprefix(TYPED) for key in keys)
    key_value = " || '|' || ".join(f"coalesce(CAST(s.{quoted(key)} AS VARCHAR), '')" for key in keys)
    owned = stage.table in CUSTOMER_TABLES or stage.table == "customers"
    unknown, unknown_detail = "false", "NULL"
    # customers derived from the orders: an order's customer is unknown only when the order itself
    # failed its checks, which its own reason already says
    if stage.table in CUSTOMER_TABLES and not (customers_derived and stage.table == "orders"):
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
    guest = f"(s.{TYPED}source_customer_id IS NULL)" if stage.table == "orders" else "false"
    currency, rate_join, currency_detail = "NULL::VARCHAR", "", "NULL"
    rate = "1.0::DOUBLE"
    if stage.table == "orders" and "currency" in stage.columns:
        other = f"s.{TYPED}currency IS NOT NULL AND s.{TYPED}currency <> {sql_literal(business.currency or '')}"
        local_day = f"CAST(timezone({sql_literal(business.timezone)}, s.{TYPED}ordered_at) AS DATE)"
        if _scalar(con, "SELECT count(*) FROM rates"):
            # only with rates: an ASOF join over every order is the one step that would not spill well
            rate_join = f"ASOF LEFT JOIN rates AS r ON r.currency = s.{TYPED}currency AND r.day <= {local_day}"
            rate = f"CASE WHEN {other} THEN r.rate ELSE 1.0 END"
            currency = f"CASE WHEN {other} AND r.rate IS NULL THEN 'no_exchange_rate' END"
        else:
            currency = f"CASE WHEN {other} THEN 'currency_mismatch' END"
        currency_detail = (
            f"CASE WHEN currency_reason IS NOT NULL THEN 'currency: ' || currency_reason || ' (' || {TYPED}currency "
            "|| ')' END"
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
                   {currency} AS currency_reason,
                   {rate} AS _rate,
                   {guest} AS is_guest,
                   {key_value} AS row_key
            FROM read_parquet({sql_literal(stage.path)}) AS s
            LEFT JOIN fate_{stage.table} AS f USING ({ROW_NUMBER})
            {join}
            {rate_join}
        )
        SELECT * EXCLUDE (is_conflict, is_unknown_customer, currency_reason, row_key),
               CASE WHEN NOT is_duplicate THEN coalesce(
                   {REASON},
                   CASE WHEN is_conflict THEN 'duplicate_id_conflict' END,
                   currency_reason,
                   CASE WHEN is_unknown_customer THEN 'unknown_customer' END
               ) END AS reason,
               CASE WHEN NOT is_duplicate THEN nullif(concat_ws('; ',
                   {DETAIL},
                   CASE WHEN is_conflict THEN '{key_names}: duplicate_id_conflict (' || row_key || ')' END,
                   {currency_detail},
                   {unknown_detail}
               ), '') END AS reason_detail
        FROM checked
        """
    )


def _count(con: duckdb.DuckDBPyConnection, stage: Staged, business: Business) -> TableResult:
    """Every number the report gives about one table, from one pass over its classified rows (each
    pass re-reads the staged rows and joins them again: at 1,000,000 customers a pass is seconds)."""
    view = f"classified_{stage.table}"
    time_column = TYPED + TIME_COLUMN[stage.table]
    amounts = [c.name for c in stage.contract.columns if c.kind == "decimal" and c.name in stage.columns]
    # more decimals than the currency has, not all zeros: rounded when written. On the text, because
    # DuckDB's cast of text to a 38-digit decimal runs at ~10 µs a value (minutes at 1,000,000 customers)
    extra_digits = f"'\\.[0-9]{{{minor_units(business.currency)}}}[0-9]*[1-9]'"
    rounded = "".join(f", count(*) FILTER (WHERE regexp_matches({TYPED}{name}, {extra_digits}))" for name in amounts)
    rows = con.sql(
        f"""
        SELECT is_duplicate, reason, count(*), min({ROW_NUMBER}), arg_min(reason_detail, {ROW_NUMBER}),
               min({time_column}), max({time_column}), count(*) FILTER (WHERE is_guest){rounded}
        FROM {view} GROUP BY ALL
        """
    ).fetchall()
    duplicates = sum(row[2] for row in rows if row[0])
    kept = [row for row in rows if not row[0] and row[1] is None]
    accepted = sum(row[2] for row in kept)
    by_reason = {reason: row[2] for reason in QUARANTINE_REASONS for row in rows if not row[0] and row[1] == reason}
    first = {row[1]: (row[3], row[4] or "") for row in rows if not row[0] and row[1] is not None}
    examples = tuple(
        Example(reason, count, *first[reason])
        for reason, count in sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
    )
    accepted_row = kept[0] if kept else None
    stats = stage.stats or ChunkStats()
    result = TableResult(
        table=stage.table,
        present=True,
        file=stage.origin,
        rows_in=stage.rows_in,
        accepted=accepted,
        quarantined=sum(by_reason.values()),
        duplicates=duplicates,
        quarantined_by_reason=by_reason,
        examples=examples,
        extra_columns=stage.extra_columns,
        columns=stage.mapping,
        derived=stage.derived,
        timestamp_formats=stats.timestamp_formats,
        reformatted_numbers=stats.reformatted_numbers,
        rounded_amounts={
            name: int(n) for name, n in zip(amounts, accepted_row[8:] if accepted_row else (), strict=False) if n
        },
        date_range=(_day(accepted_row[5], business), _day(accepted_row[6], business))
        if accepted_row and accepted_row[5] is not None
        else None,
        guests=int(accepted_row[7]) if accepted_row else 0,
        cascade=_cascade(con, stage) if stage.table in CUSTOMER_TABLES and "unknown_customer" in by_reason else 0,
    )
    if not result.reconciled:  # every row must be accounted for; anything else is a bug here
        raise RuntimeError(f"ingest lost rows of {stage.table}: {result.to_dict()}")
    return result


def _scalar(con: duckdb.DuckDBPyConnection, query: str) -> int:
    row = con.sql(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _day(value: object, business: Business) -> str:
    """An instant as the business's local day (a date stays as it is)."""
    if isinstance(value, datetime):
        return value.astimezone(ZoneInfo(business.timezone)).date().isoformat()
    return str(value)


def _cascade(con: duckdb.DuckDBPyConnection, stage: Staged) -> int:
    """unknown_customer rows whose (source, source_customer_id) is a customers row that was quarantined."""
    return _scalar(
        con,
        f"""
        SELECT count(*) FROM classified_{stage.table} AS c
        SEMI JOIN (
            SELECT {TYPED}source AS source, {TYPED}source_customer_id AS source_customer_id
            FROM classified_customers WHERE reason IS NOT NULL
        ) AS rejected
          ON rejected.source = c.{TYPED}source AND rejected.source_customer_id = c.{TYPED}source_customer_id
        WHERE c.reason = 'unknown_customer'
        """,
    )


def _money(con: duckdb.DuckDBPyConnection) -> Money:
    """Guests, refunds and conversions among the accepted orders, for the report."""
    amount = f"CAST({TYPED}net_amount AS DOUBLE) * _rate"
    row = con.sql(
        f"""
        SELECT count(*) FILTER (WHERE is_guest AND {TYPED}status = 'completed'),
               coalesce(sum({amount}) FILTER (WHERE is_guest AND {TYPED}status = 'completed'), 0),
               count(*) FILTER (WHERE {TYPED}status = 'returned' AND {amount} < 0),
               coalesce(-sum({amount}) FILTER (WHERE {TYPED}status = 'returned' AND {amount} < 0), 0),
               coalesce(sum({amount}) FILTER (WHERE {TYPED}status = 'completed'), 0),
               count(*) FILTER (WHERE _rate <> 1)
        FROM classified_orders
        WHERE reason IS NULL AND NOT is_duplicate
        """
    ).fetchone()
    assert row is not None
    return Money(int(row[0]), float(row[1]), int(row[2]), float(row[3]), float(row[4]), int(row[5]))


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
        raw = ", ".join(quoted(name) for name in raw_columns(stage.contract, stage.columns))
        with atomic_file(target) as partial:
            copy_to_parquet(
                con,
                f"""
                SELECT {raw}, {sql_literal(stage.origin)} AS _file, {ROW_NUMBER}, reason, reason_detail
                FROM classified_{table}
                WHERE reason IS NOT NULL
                ORDER BY {ROW_NUMBER}
                """,
                partial,
            )


def _lake_columns(contract: TableContract, business: Business, converts: bool) -> str:
    """The lake's columns of a table: money cast to the currency's minor units (DuckDB rounds half
    away from zero), order amounts converted with their rate when `converts` (rates were given)."""
    money = decimal_type(business.currency)
    columns = []
    for column in contract.columns:
        value = f"{TYPED}{column.name}"
        if column.kind == "decimal":
            exact = f"CAST({value} AS {money})"
            if converts and contract.name == "orders" and column.name in AMOUNT_COLUMNS:
                # a converted amount goes through DOUBLE (rates are not exact anyway); the rest stays exact
                value = f"CASE WHEN _rate = 1 THEN {exact} ELSE CAST(CAST({value} AS DOUBLE) * _rate AS {money}) END"
            else:
                value = exact
        elif contract.name == "orders" and column.name == "currency":
            value = f"CASE WHEN {value} IS NULL THEN NULL ELSE {sql_literal(business.currency or '')} END"
        columns.append(f"{value} AS {quoted(column.name)}")
    return ", ".join(columns)


def _write_lake(
    con: duckdb.DuckDBPyConnection,
    staged: dict[str, Staged],
    new_lake: Path,
    crm_source: str,
    business: Business,
    guests: int,
) -> None:
    """Write the whole lake into the empty folder `new_lake` (the caller swaps it in whole)."""
    converts = bool(_scalar(con, "SELECT count(*) FROM rates"))
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
    copy_to_parquet(con, _customers_query(crm_source), lake_file(new_lake, "customers"))
    for table, stage in staged.items():
        if table == "customers":
            continue
        owner = "customer_id, " if table in CUSTOMER_TABLES else ""
        order = ", ".join(quoted(name) for name in LAKE_ORDER[table])
        copy_to_parquet(
            con,
            f"""
            SELECT {owner}{_lake_columns(stage.contract, business, converts)}
            FROM classified_{table}
            WHERE reason IS NULL AND NOT is_duplicate AND NOT is_guest
            ORDER BY {order}
            """,
            lake_file(new_lake, table),
        )
    if guests:
        order = ", ".join(quoted(name) for name in LAKE_ORDER[GUEST_ORDERS])
        copy_to_parquet(
            con,
            f"""
            SELECT {_lake_columns(CONTRACTS["orders"], business, converts)}
            FROM classified_orders
            WHERE reason IS NULL AND NOT is_duplicate AND is_guest
            ORDER BY {order}
            """,
            lake_file(new_lake, GUEST_ORDERS),
        )
    write_business(new_lake, business)


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
