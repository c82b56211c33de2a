"""The exports as the shop's systems would write them: each chunk's orders, engagement events,
surveys and tickets as tables of strings in contract columns (ids numbered across chunks), and the
writer that appends them to one CSV or Parquet file per table.

Tables built here may carry helper columns (`_seconds`, `_source`: the instant and source code of
each row) that the dirt reads to spoil a row its own way; the writer keeps only the contract's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from features.lake.contracts import CONTRACTS, EVENT_TYPES, ORDER_STATUSES
from features.sample.activity import (
    SURVEY_CHANNELS,
    TICKET_CATEGORIES,
    TICKET_CHANNELS,
    Orders,
    Surveys,
    Tickets,
)
from features.sample.engagement import EVENT_CHANNELS, Campaigns
from features.sample.formats import blank, fixed_ids, format_timestamps, number_strings, pick
from features.sample.people import Accounts
from features.sample.world import CATEGORIES, CRM, SOURCES, Window

FileFormat = Literal["csv", "parquet"]


@dataclass
class Counters:
    """Running numbers, so ids are unique across chunks and the same for the same arguments."""

    orders: int = 0
    events: int = 0
    sessions: int = 0
    surveys: int = 0
    tickets: int = 0

    def take(self, name: str, count: int) -> np.ndarray:
        first = getattr(self, name)
        setattr(self, name, first + count)
        return np.arange(first, first + count, dtype=np.int64) + 1


def orders_table(orders: Orders, accounts: Accounts, window: Window, counters: Counters) -> pa.Table:
    source = accounts.source[orders.account]
    seconds = window.seconds(orders.t)
    return pa.table(
        {
            "order_id": fixed_ids("ORD", counters.take("orders", len(orders.t)), 10),
            "source": pick(SOURCES, source),
            "source_customer_id": accounts.ids.take(pa.array(orders.account)),
            "ordered_at": format_timestamps(seconds, source),
            "status": pick(ORDER_STATUSES, orders.status),
            "net_amount": number_strings(orders.net),
            "channel": pick(SOURCES, source),
            "gross_amount": number_strings(orders.net + orders.discount),
            "discount_amount": number_strings(orders.discount),
            "items": number_strings(orders.items),
            "category": pick(CATEGORIES, orders.category),
            "currency": pa.array(np.full(len(orders.t), "VND")),
            # the sample's returns are whole orders sent back (positive amounts), never credit notes
            "original_order_id": pa.array(np.full(len(orders.t), "")),
            "_seconds": seconds,
            "_source": source,
        }
    )


def events_table(rows: dict[str, np.ndarray], accounts: Accounts, window: Window, campaigns: Campaigns,
                 counters: Counters) -> pa.Table:  # fmt: skip
    count = len(rows["t"])
    source = accounts.source[rows["account"]]
    seconds = window.seconds(rows["t"])
    # sessions numbered in order of first appearance in the file
    with_session = rows["session"] >= 0
    sessions, first_seen = np.unique(rows["session"][with_session], return_index=True)
    numbers = counters.take("sessions", len(sessions))
    rank = np.zeros(int(sessions.max()) + 1 if len(sessions) else 1, dtype=np.int64)
    rank[sessions[np.argsort(first_seen, kind="stable")]] = numbers
    session_ids = blank(fixed_ids("S", rank[np.maximum(rows["session"], 0)], 10), with_session)
    campaign_ids = pa.array([*campaigns.names, ""], type=pa.string()).take(
        pa.array(np.where(rows["campaign"] >= 0, rows["campaign"], len(campaigns.names)))
    )
    return pa.table(
        {
            "event_id": fixed_ids("EV", counters.take("events", count), 11),
            "source": pick(SOURCES, source),
            "source_customer_id": accounts.ids.take(pa.array(rows["account"])),
            "occurred_at": format_timestamps(seconds, source),
            "event_type": pick(EVENT_TYPES, rows["event"]),
            "channel": pick(EVENT_CHANNELS, rows["channel"]),
            "campaign_id": campaign_ids,
            "session_id": session_ids,
            "duration_s": blank(number_strings(rows["duration"]), rows["duration"] >= 0),
            "page_views": blank(number_strings(rows["pages"]), rows["pages"] >= 0),
            "_seconds": seconds,
            "_source": source,
        }
    )


def surveys_table(surveys: Surveys, accounts: Accounts, window: Window, counters: Counters) -> pa.Table:
    empty = pa.array(np.full(len(surveys.t), ""), type=pa.string())
    return pa.table(
        {
            "response_id": fixed_ids("R", counters.take("surveys", len(surveys.t)), 9),
            "source_customer_id": accounts.ids.take(pa.array(accounts.of_person[surveys.person, CRM])),
            "responded_at": format_timestamps(window.seconds(surveys.t), np.full(len(surveys.t), CRM)),
            "survey_type": pick(("csat", "nps"), surveys.nps.astype(np.int64)),
            "score": number_strings(surveys.score),
            "source": empty,
            "channel": pick(SURVEY_CHANNELS, surveys.channel),
            "comment": surveys.comment,
        }
    )


def tickets_table(tickets: Tickets, accounts: Accounts, window: Window, counters: Counters) -> pa.Table:
    count = len(tickets.opened)
    crm = np.full(count, CRM)
    opened_seconds = window.seconds(tickets.opened)

    def optional(t: np.ndarray) -> pa.Array:
        known = ~np.isnan(t)
        return blank(format_timestamps(window.seconds(np.nan_to_num(t)), crm), known)

    return pa.table(
        {
            "ticket_id": fixed_ids("TK", counters.take("tickets", count), 8),
            "source_customer_id": accounts.ids.take(pa.array(accounts.of_person[tickets.person, CRM])),
            "opened_at": format_timestamps(opened_seconds, crm),
            "source": pa.array(np.full(count, ""), type=pa.string()),
            "first_response_at": optional(tickets.first_response),
            "resolved_at": optional(tickets.resolved),
            "channel": pick(TICKET_CHANNELS, tickets.channel),
            "category": pick(TICKET_CATEGORIES, tickets.category),
            "status": pick(("open", "resolved"), (~np.isnan(tickets.resolved)).astype(np.int64)),
            "_seconds": opened_seconds,
        }
    )


# ---------------------------------------------------------------- writing


class Writer:
    """Appends tables of strings to one CSV or Parquet file; opened at the first write."""

    def __init__(self, path: Path, schema: pa.Schema, file_format: FileFormat) -> None:
        self.path, self.schema, self.format = path, schema, file_format
        self.rows = 0
        self._writer: pv.CSVWriter | pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        if self._writer is None:
            self.path.unlink(missing_ok=True)
            if self.format == "csv":
                self._writer = pv.CSVWriter(str(self.path), self.schema)
            else:
                self._writer = pq.ParquetWriter(str(self.path), self.schema, compression="zstd")
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is None:
            self.write(self.schema.empty_table())
        assert self._writer is not None
        self._writer.close()


def export_schema(name: str) -> pa.Schema:
    """Every contract column of the table, in contract order, as a string."""
    return pa.schema([(column, pa.string()) for column in CONTRACTS[name].column_names])
