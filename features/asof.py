"""Which day custlens describes: the as-of date comes from the data, not from the wall clock.

The lake knows where its data ends (the last event of any kind). When that is within
`features.fresh_within_days` of now, the data is fresh and the as-of is today (the online reader
then counts recency to the request's time); otherwise the as-of is the end of the data: the first
cutoff whose snapshot holds every event, the day after the last event's (UTC) day. A data set
that ended in 1998 is described as of 1998, whatever today is.

Features, materialize, training's latest cutoff, segments and scoring all take their default from
`live_as_of`, and each says which as-of it used and why (`AsOf.line`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import duckdb

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.lake.contracts import CONTRACTS
from features.lake.tables import GUEST_ORDERS, cutoff_instant, sql_literal, table_path


@dataclass(frozen=True)
class AsOf:
    """The day the features describe (a snapshot cutoff: data before its 00:00 UTC) and why."""

    day: date
    data_end: datetime  # the lake's last event, UTC
    fresh: bool  # the data end is within features.fresh_within_days of now: request-time recency online
    why: str

    @property
    def instant(self) -> datetime:
        return cutoff_instant(self.day)

    def line(self, what: str = "as of") -> str:
        return f"{what} {self.day} ({self.why})"


def activity_columns() -> dict[str, tuple[str, ...]]:
    """Every lake table's columns holding a time of the business's activity (a birth date is not one)."""
    columns = {
        name: tuple(c.name for c in contract.columns if c.kind in ("timestamp", "date") and c.activity_time)
        for name, contract in CONTRACTS.items()
    }
    columns[GUEST_ORDERS] = columns["orders"]
    return {name: found for name, found in columns.items() if found}


def data_end(settings: Settings) -> datetime:
    """The lake's last event of any kind (orders, guest orders, engagement, surveys, tickets,
    sign-ups, marketing spend days), as a UTC instant; CustlensError when the lake holds none."""
    parts: list[str] = []
    for table, columns in activity_columns().items():
        path = table_path(settings, table)
        if path.exists():
            parts.extend(
                f"SELECT max(CAST({column} AS TIMESTAMPTZ)) AS t FROM read_parquet({sql_literal(path)})"
                for column in columns
            )
    if not parts:
        raise CustlensError(f"the lake under {settings.data_dir} is empty; run `custlens ingest` first")
    with closing(duckdb.connect()) as con:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute(f"SELECT max(t) FROM ({' UNION ALL '.join(parts)})").fetchone()
    if row is None or row[0] is None:
        raise CustlensError(f"the lake under {settings.data_dir} holds no dated rows; run `custlens ingest` first")
    last: datetime = row[0]
    return last.astimezone(UTC)


def is_fresh(settings: Settings, end: datetime | None, now: datetime) -> bool:
    """Whether data ending at `end` is described as of `now`: within features.fresh_within_days,
    and features.include_today allows the wall clock."""
    features = settings.features
    return end is not None and features.include_today and now - end <= timedelta(days=features.fresh_within_days)


def live_as_of(settings: Settings, now: datetime | None = None) -> AsOf:
    """The default as-of: today when the data is fresh (and `features.include_today`), else the end
    of the data."""
    now = now or datetime.now(UTC)
    end = data_end(settings)
    window = settings.features.fresh_within_days
    stamp = f"{end:%Y-%m-%d %H:%M} UTC"
    if is_fresh(settings, end, now):
        why = f"today: the data's last event, {stamp}, is within features.fresh_within_days = {window:g} days"
        return AsOf(now.date(), end, True, why)
    if now - end <= timedelta(days=window):
        why = f"the end of the data, last event {stamp}; features.include_today is false"
    else:
        why = (
            f"the end of the data: its last event, {stamp}, is {_age(now - end)} old, more than "
            f"features.fresh_within_days = {window:g} days"
        )
    return AsOf(end.date() + timedelta(days=1), end, False, why)


def _age(age: timedelta) -> str:
    days = age.total_seconds() / 86_400
    return f"{days:,.0f} days" if days >= 2 else f"{age.total_seconds() / 3600:,.0f} hours"


def after_data_end(cutoffs: Sequence[date], live: AsOf) -> list[date]:
    """The snapshot cutoffs later than the live as-of: built under an earlier setting (a wall-clock
    snapshot of stale data, say), they describe days the data does not reach."""
    return sorted(day for day in cutoffs if day > live.day)


def resolve_snapshot(settings: Settings, requested: date | None, available: Sequence[date]) -> tuple[date, str]:
    """The snapshot a command uses and the line saying why: `requested` (--as-of) when given, else
    the live as-of, which must have been built: a later (stale) or an earlier snapshot is never
    taken in its place."""
    if not available:
        raise CustlensError(f"no feature snapshots under {settings.features_dir}; run `custlens features build` first")
    if requested is not None:
        if requested not in available:
            raise CustlensError(
                f"no feature snapshot at {requested}; snapshots exist at {_listed(available)} "
                f"(build another with `custlens features build --as-of {requested}`)"
            )
        try:
            live = live_as_of(settings)
        except CustlensError:
            return requested, f"as of {requested} (--as-of)"
        if requested > live.day:
            return requested, (f"as of {requested} (--as-of), after the as-of the data gives, {live.day} ({live.why}): "
                               "its days have no data")  # fmt: skip
        return requested, f"as of {requested} (--as-of)"
    try:
        live = live_as_of(settings)
    except CustlensError:  # snapshots without a lake to date them (copied in, say): the latest
        return available[-1], f"as of {available[-1]} (the latest snapshot; no lake to date the data by)"
    if live.day not in available:
        stale = after_data_end(available, live)
        note = f"; later snapshots ({_listed(stale)}) are not used in its place" if stale else ""
        raise CustlensError(
            f"no feature snapshot at the as-of {live.day} ({live.why}){note}; run `custlens features build` "
            f"(or pass --as-of one of {_listed(available)})"
        )
    return live.day, live.line()


def _listed(days: Sequence[date], limit: int = 6) -> str:
    shown = [str(day) for day in days[-limit:]]
    return ", ".join(shown) if len(days) <= limit else f"{len(days)} dates up to " + ", ".join(shown)


class Freshness:
    """Whether the lake's data is fresh at a given instant, for a long-running reader (the
    service): the data end is read again only when a lake file changes, looked at no more than
    every `every_seconds`."""

    def __init__(self, settings: Settings, every_seconds: float = 5.0) -> None:
        self.settings = settings
        self.every_seconds = every_seconds
        self._paths = [table_path(settings, table) for table in activity_columns()]
        self._signature: tuple[float, ...] | None = None
        self._looked = -float("inf")
        self._end: datetime | None = None
        self._lock = threading.Lock()

    def data_end(self) -> datetime | None:
        """The lake's last event, None when there is no lake to read it from."""
        with self._lock:
            clock = time.monotonic()
            if clock - self._looked >= self.every_seconds:
                self._looked = clock
                signature = tuple(path.stat().st_mtime if path.exists() else -1.0 for path in self._paths)
                if signature != self._signature:
                    self._signature = signature
                    try:
                        self._end = data_end(self.settings)
                    except CustlensError:
                        self._end = None
            return self._end

    def fresh(self, now: datetime) -> bool:
        """Fresh data, or no lake to say otherwise: day counts go to the request's time."""
        end = self.data_end()
        return end is None or is_fresh(self.settings, end, now)
