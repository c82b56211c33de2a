"""The lake as the KPI engine reads it: a DuckDB in the business's calendar (every KPI day, week and
month is a local day), the orders with and without a customer (guest orders), and their day span."""

from __future__ import annotations

from contextlib import closing
from datetime import date

import duckdb

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.lake.tables import (
    GUEST_ORDERS,
    duckdb_connect,
    has_table,
    lake_business,
    read_table_sql,
    require_tables,
    table_path,
)

# A lake without guest orders reads as an empty guest_orders table with the columns the KPIs read.
NO_GUEST_ORDERS_SQL = (
    "(SELECT CAST(NULL AS TIMESTAMPTZ) AS ordered_at, CAST(NULL AS VARCHAR) AS status, "
    "CAST(NULL AS DECIMAL(18, 3)) AS net_amount, CAST(NULL AS VARCHAR) AS channel LIMIT 0)"
)


def connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    """DuckDB within the feature settings' memory and threads, whose casts of an instant to a DATE
    and date_trunc give the business's local day: the cube build and the direct scan."""
    return duckdb_connect(
        settings.features.duckdb_memory_limit,
        settings.features.duckdb_threads,
        timezone=lake_business(settings).timezone,
    )


def order_tables(settings: Settings) -> dict[str, str]:
    """The lake's customers' orders and guest orders as SQL sources (`orders`, `guest_orders`)."""
    guests = table_path(settings, GUEST_ORDERS)
    return {
        "orders": read_table_sql(table_path(settings, "orders")),
        "guest_orders": read_table_sql(guests) if has_table(settings, GUEST_ORDERS) else NO_GUEST_ORDERS_SQL,
    }


def order_day_span(con: duckdb.DuckDBPyConnection, settings: Settings, tables: dict[str, str]) -> tuple[date, date]:
    """The first and last local day with an order (a customer's or a guest's) on `con`."""
    span = con.execute(
        f"SELECT min(CAST(ordered_at AS DATE)), max(CAST(ordered_at AS DATE)) FROM ("
        f"SELECT ordered_at FROM {tables['orders']} UNION ALL SELECT ordered_at FROM {tables['guest_orders']})"
    ).fetchone()
    if span is None or span[0] is None:
        raise CustlensError(
            f"the lake {settings.lake_dir} has no orders; the KPI cube needs at least one order. "
            "Check the orders export and run `custlens ingest` again"
        )
    return span[0], span[1]


def last_order_day(settings: Settings) -> date:
    """The lake's last local day with an order."""
    require_tables(settings, ("orders",))
    with closing(connect(settings)) as con:
        return order_day_span(con, settings, order_tables(settings))[1]
