"""The lake's owner: where each clean table lives, which tables are present, when the data ends,
what a cutoff date means, the CRM's own ids, and the DuckDB and atomic-write helpers that every
layer uses to read the lake and to replace a file or a folder without leaving half of one.

Every other module asks here; none spells `lake_dir / "<table>.parquet"` by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from custlens.errors import CustlensError
from custlens.settings import Settings

REQUIRED_TABLES = ("customers", "orders")
OPTIONAL_TABLES = ("engagement_events", "surveys", "tickets", "marketing_spend")
CROSSWALK = "crosswalk"  # (source, source_customer_id) -> customer_id, with each account's signup_at
GUEST_ORDERS = "guest_orders"  # orders without a customer id: in revenue/order KPIs, never in features
BUSINESS_FILE = "business.json"  # the time zone and currency ingest read the lake's data in

# Net revenue of one order row: a completed order's amount, minus refunds (a `returned` row with a
# negative amount, a credit note). A returned row with a positive amount is an order that was sent
# back in full: it never earned anything, so it counts 0. {o} is the orders table's alias.
_NET_REVENUE = (
    "CASE WHEN {o}status = 'completed' THEN {o}net_amount "
    "WHEN {o}status = 'returned' AND {o}net_amount < 0 THEN {o}net_amount ELSE 0 END"
)


def net_revenue_sql(alias: str | None = None) -> str:
    """The SQL of an order row's net revenue (a DECIMAL), for every layer that sums revenue."""
    return _NET_REVENUE.format(o=f"{alias}." if alias else "")


# ---------------------------------------------------------------------------------------------
# Tables


def table_path(settings: Settings, table: str) -> Path:
    """The lake file of one table (or of the crosswalk)."""
    return lake_file(settings.lake_dir, table)


def lake_file(lake_dir: Path, table: str) -> Path:
    """The same for a lake folder that is not the configured one (a lake being written, a copy)."""
    return lake_dir / f"{table}.parquet"


def crosswalk_path(settings: Settings) -> Path:
    return table_path(settings, CROSSWALK)


def has_table(settings: Settings, table: str) -> bool:
    return table_path(settings, table).exists()


def missing_table(settings: Settings, table: str) -> CustlensError:
    """The one message for a lake without a table that the caller cannot do without."""
    return CustlensError(
        f"the lake {settings.lake_dir} has no {table}.parquet; run `custlens ingest` first "
        "(or point CUSTLENS_DATA_DIR at the data folder that holds the lake)"
    )


def require_tables(settings: Settings, tables: Sequence[str] = REQUIRED_TABLES) -> None:
    for table in tables:
        if not has_table(settings, table):
            raise missing_table(settings, table)


def present_tables(settings: Settings) -> tuple[str, ...]:
    """The optional tables this lake holds (customers and orders must be there: checked)."""
    require_tables(settings)
    return tuple(table for table in OPTIONAL_TABLES if has_table(settings, table))


def lake_stamp(settings: Settings) -> str:
    """Which lake this is: ingest swaps the whole folder, so its files' times and sizes tell."""
    stamps = []
    for path in sorted(settings.lake_dir.glob("*.parquet")):
        stat = path.stat()
        stamps.append(f"{path.name}:{stat.st_mtime_ns}:{stat.st_size}")
    return ";".join(stamps)


# ---------------------------------------------------------------------------------------------
# The business the lake's data belongs to


@dataclass(frozen=True)
class Business:
    """What ingest read the data as: KPI calendars are `timezone` days, money is `currency`."""

    timezone: str = "UTC"
    currency: str | None = None
    minor_units: int = 2
    timezone_from: str = "settings"  # settings | offsets in the data (UTC calendar)
    currency_from: str = "settings"  # settings | the orders' currency column | unknown

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def write_business(lake_dir: Path, business: Business) -> None:
    (lake_dir / BUSINESS_FILE).write_text(json.dumps(business.to_dict(), indent=2) + "\n", encoding="utf-8")


def lake_business(settings: Settings) -> Business:
    """The business of the current lake (from ingest's record); a lake written before ingest kept one
    reads as the configured business, else UTC and no currency."""
    path = settings.lake_dir / BUSINESS_FILE
    if path.is_file():
        values = json.loads(path.read_text(encoding="utf-8"))
        return Business(**values)
    from features.lake.money import minor_units

    currency = settings.business.currency
    return Business(settings.business.timezone or "UTC", currency, minor_units(currency))


# ---------------------------------------------------------------------------------------------
# Time


def cutoff_instant(day: date) -> datetime:
    """A cutoff date means the first instant of that day in UTC."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def lake_end(settings: Settings) -> datetime:
    """The first instant after the last order day in the lake: label windows must end by it."""
    path = table_path(settings, "orders")
    if not path.exists():
        raise missing_table(settings, "orders")
    row = duckdb.sql(f"SELECT max(ordered_at) FROM read_parquet({sql_literal(path)})").fetchone()
    if row is None or row[0] is None:
        raise CustlensError(f"{path} holds no orders; labels need order history")
    last: datetime = row[0]
    return cutoff_instant(last.date() + timedelta(days=1))


# ---------------------------------------------------------------------------------------------
# The CRM's own ids


@dataclass(frozen=True)
class CrmIds:
    """The CRM's own id of each customer: the source_customer_id of the CRM source in the lake's
    crosswalk. A customer with several CRM accounts gets the one signed up first (ties: the
    smallest id); one with none gets NULL."""

    customer_ids: pa.Array
    crm_ids: pa.Array
    all_rows: pa.Table  # every CRM account: source_customer_id -> customer_id

    @classmethod
    def read(cls, settings: Settings) -> CrmIds:
        return cls.from_file(crosswalk_path(settings), settings.crm_source)

    @classmethod
    def from_file(cls, path: Path, crm_source: str) -> CrmIds:
        if not path.exists():
            raise CustlensError(f"no crosswalk at {path}; run `custlens ingest` first")
        accounts = pq.read_table(
            path, columns=["customer_id", "source_customer_id", "signup_at"], filters=[("source", "=", crm_source)],
        )  # fmt: skip
        return cls.from_accounts(accounts)

    @classmethod
    def from_accounts(cls, accounts: pa.Table) -> CrmIds:
        """From the CRM source's crosswalk rows (customer_id, source_customer_id, signup_at)."""
        ordered = accounts.sort_by([("customer_id", "ascending"), ("signup_at", "ascending"),
                                    ("source_customer_id", "ascending")])  # fmt: skip
        first = ordered.group_by("customer_id", use_threads=False).aggregate([("source_customer_id", "first")])
        return cls(
            first.column("customer_id").combine_chunks(),
            first.column("source_customer_id_first").combine_chunks(),
            accounts.select(["source_customer_id", "customer_id"]),
        )

    def for_customers(self, customer_ids: Sequence[str]) -> pa.Array:
        where = pc.index_in(pa.array(customer_ids, pa.string()), value_set=self.customer_ids)
        return self.crm_ids.take(where)

    def customers_of(self, crm_ids: Sequence[str]) -> dict[str, str]:
        if not crm_ids:
            return {}
        wanted = self.all_rows.filter(pc.is_in(self.all_rows.column("source_customer_id"), pa.array(crm_ids)))
        return dict(zip(wanted.column(0).to_pylist(), wanted.column(1).to_pylist(), strict=True))


# ---------------------------------------------------------------------------------------------
# DuckDB


def duckdb_connect(
    memory_limit: str | None = None,
    threads: int | None = None,
    temp_dir: Path | None = None,
    timezone: str = "UTC",
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that draws no progress bar of its own (progress is shown by rich, by the
    caller). Instants are read and written as instants; `timezone` is the calendar that casts of
    TIMESTAMPTZ to DATE and date_trunc use: UTC, or the business's zone for local-day KPIs."""
    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_dir is not None:
        con.execute(f"SET temp_directory = {sql_literal(temp_dir)}")
    con.execute(f"SET TimeZone = {sql_literal(timezone)}")
    con.execute("SET enable_progress_bar = false")
    return con


def sql_literal(value: Path | str) -> str:
    """A path or text as a SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_date(value: date) -> str:
    return f"DATE '{value.isoformat()}'"


def read_table_sql(path: Path) -> str:
    return f"read_parquet({sql_literal(path)})"


def copy_to_parquet(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    con.execute(f"COPY ({query}) TO {sql_literal(path)} (FORMAT parquet, COMPRESSION zstd)")


# ---------------------------------------------------------------------------------------------
# Atomic writes: a reader sees the old file or folder or the new one, never half of either


def partial_path(target: Path) -> Path:
    """A hidden sibling of `target` to write into first (same folder, so a rename is atomic)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_file(target: Path, durable: bool = False) -> Iterator[Path]:
    """Write to the yielded path; on success it replaces `target` in one rename (after an fsync
    when `durable`), on error it is removed and `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    try:
        yield partial
        if durable:
            fsync_file(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_file(target) as partial:
        partial.write_text(text, encoding="utf-8")


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Fill the yielded folder; on success it takes `target`'s place (the old folder is renamed
    away first, then removed), on error it is removed and `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    new = target.with_name(f".{target.name}-new-{uuid.uuid4().hex}")
    new.mkdir()
    try:
        yield new
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    swap_folder(new, target)


def swap_folder(new: Path, target: Path) -> Path:
    """Put the folder `new` in `target`'s place: two renames, then the old one is removed."""
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex}")
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
