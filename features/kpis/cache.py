"""KpiCache: the cubes loaded in memory (their tables, their per-order and ticket rows as numpy
arrays) and the latest scores' predicted-value sums, each dropped when its folder is rebuilt.
Its caller owns it: one per service worker, one per CLI call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import duckdb
import numpy as np

from features.kpis.cube import CUBE_FILES, CubeMeta, PredictedSums
from features.kpis.definitions import ALL
from features.lake.tables import duckdb_connect, read_table_sql

NO_DAY = np.iinfo(np.int32).min  # a missing previous order day: before every day
EPOCH_SQL = "DATE '1970-01-01'"  # days in the arrays count from here

DayRows = tuple[np.ndarray, np.ndarray, np.ndarray]  # (day, prev_day, prev2_day) of per-order rows
Durations = tuple[np.ndarray, np.ndarray]  # (day, hours) of ticket durations, by day


@dataclass(frozen=True)
class CustomerOrders:
    """A cube's per-order customer rows as arrays sorted by day (days since 1970-01-01), so that
    distinct-customer counts of any period are a slice and a few vectorised comparisons."""

    day: np.ndarray
    prev_day: np.ndarray  # NO_DAY where the customer had no earlier order
    prev2_day: np.ndarray
    # the same rows split by acquisition channel and by city: name -> (day, prev_day, prev2_day)
    by_channel: dict[str, DayRows]
    by_city: dict[str, DayRows]
    # ticket durations per measure, overall (None -> {ALL: ...}) and per channel and city
    tickets: dict[str, dict[str | None, dict[str, Durations]]]

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection) -> CustomerOrders:
        """From a loaded cube's customer_orders and ticket_durations tables."""
        with closing(con.cursor()) as cur:
            channels = tuple(
                row[0] for row in cur.execute("SELECT DISTINCT channel FROM customer_orders ORDER BY 1").fetchall()
            )
            cities = tuple(
                row[0] for row in cur.execute("SELECT DISTINCT city FROM customer_orders ORDER BY 1").fetchall()
            )
            arrays = cur.execute(
                f"""SELECT CAST(day - {EPOCH_SQL} AS INTEGER) AS day,
                           CAST(coalesce(prev_day - {EPOCH_SQL}, {NO_DAY}) AS INTEGER) AS prev_day,
                           CAST(coalesce(prev2_day - {EPOCH_SQL}, {NO_DAY}) AS INTEGER) AS prev2_day,
                           CAST(list_position($channels, channel) - 1 AS INTEGER) AS channel,
                           CAST(list_position($cities, city) - 1 AS INTEGER) AS city
                    FROM customer_orders ORDER BY day""",
                {"channels": list(channels), "cities": list(cities)},
            ).fetchnumpy()
        day = np.ascontiguousarray(arrays["day"], dtype=np.int32)
        prev_day = np.ascontiguousarray(arrays["prev_day"], dtype=np.int32)
        prev2_day = np.ascontiguousarray(arrays["prev2_day"], dtype=np.int32)

        def split(codes: np.ndarray, names: tuple[str, ...]) -> dict[str, DayRows]:
            order = np.argsort(codes, kind="stable")  # by code, still by day within a code
            bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
            return {
                name: (day[order[a:b]], prev_day[order[a:b]], prev2_day[order[a:b]])
                for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)
            }

        return cls(
            day=day,
            prev_day=prev_day,
            prev2_day=prev2_day,
            by_channel=split(np.asarray(arrays["channel"], dtype=np.int32), channels),
            by_city=split(np.asarray(arrays["city"], dtype=np.int32), cities),
            tickets=_ticket_durations(con),
        )


def _ticket_durations(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str | None, dict[str, Durations]]]:
    with closing(con.cursor()) as cur:
        rows = cur.execute(
            f"""SELECT measure, channel, city, CAST(day - {EPOCH_SQL} AS INTEGER) AS day, hours
                FROM ticket_durations ORDER BY measure, day"""
        ).fetchnumpy()
    t_measure = np.asarray(rows["measure"], dtype=object)
    t_channel = np.asarray(rows["channel"], dtype=object)
    t_city = np.asarray(rows["city"], dtype=object)
    t_day = np.ascontiguousarray(rows["day"], dtype=np.int32)
    t_hours = np.ascontiguousarray(rows["hours"], dtype=np.float64)
    tickets: dict[str, dict[str | None, dict[str, Durations]]] = {}
    for measure in sorted(set(t_measure.tolist())):
        mine = t_measure == measure
        m_day, m_hours = t_day[mine], t_hours[mine]
        m_channel, m_city = t_channel[mine], t_city[mine]
        tickets[measure] = {
            None: {ALL: (m_day, m_hours)},
            "channel": {
                str(name): (m_day[m_channel == name], m_hours[m_channel == name])
                for name in sorted(set(m_channel.tolist()))
            },
            "city": {
                str(name): (m_day[m_city == name], m_hours[m_city == name]) for name in sorted(set(m_city.tolist()))
            },
        }
    return tickets


@dataclass(frozen=True)
class LoadedCube:
    """One cube in memory: its tables in an in-memory DuckDB, and its customer rows as arrays."""

    con: duckdb.DuckDBPyConnection
    orders: CustomerOrders


class KpiCache:
    """The cubes and predicted-value sums a process has loaded, by folder. An entry is kept while
    its folder's stamp stays the same and replaced (the old connection closed) once the folder is
    rebuilt: the service and the benchmark ask many questions, and reading the Parquet files each
    time cost more than answering. About 200 MB per cube at 1,000,000 customers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cubes: dict[Path, tuple[str, LoadedCube]] = {}
        self._predicted: dict[Path, tuple[str, PredictedSums]] = {}

    def cube(self, folder: Path, meta: CubeMeta) -> LoadedCube:
        """The cube in `folder` (whose meta.json is `meta`), loaded once per build."""
        key = folder.resolve()
        with self._lock:
            cached = self._cubes.get(key)
            if cached is not None and cached[0] == meta.lake_stamp:
                return cached[1]
            con = duckdb_connect(timezone=meta.timezone)  # the cube's days are this business's days
            for name in CUBE_FILES:
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM {read_table_sql(folder / f'{name}.parquet')}")
            loaded = LoadedCube(con, CustomerOrders.load(con))
            if cached is not None:
                cached[1].con.close()
            self._cubes[key] = (meta.lake_stamp, loaded)
            return loaded

    def predicted(self, folder: Path, stamp: str, compute: Callable[[], PredictedSums]) -> PredictedSums:
        """The predicted-value sums of the scores in `folder` (whose stamp is `stamp`), computed
        once per batch run."""
        key = folder.resolve()
        with self._lock:
            cached = self._predicted.get(key)
            if cached is None or cached[0] != stamp:
                cached = (stamp, compute())
                self._predicted[key] = cached
            return cached[1]

    def cubes_loaded(self) -> int:
        return len(self._cubes)

    def close(self) -> None:
        """Close every loaded cube's connection and forget everything."""
        with self._lock:
            for _, loaded in self._cubes.values():
                loaded.con.close()
            self._cubes.clear()
            self._predicted.clear()

    def __enter__(self) -> KpiCache:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
