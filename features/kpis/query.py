"""`kpis()`: any period and grouping answered from a cube loaded in a KpiCache, by summing its daily
rows, counting distinct customers and exact medians on its arrays, and reading cohorts off it."""

from __future__ import annotations

from bisect import bisect_right
from contextlib import closing
from datetime import date
from pathlib import Path

import duckdb
import numpy as np

from custlens.settings import Settings
from features.kpis.answer import CUSTOMER_PARTS, Groups, Parts, Question, kpi_table
from features.kpis.arguments import PERIOD_GROUPINGS, SEGMENT_GROUPINGS, Grouping, check_grouping, check_period
from features.kpis.cache import NO_DAY, CustomerOrders, KpiCache
from features.kpis.cube import (
    CubeMeta,
    PredictedSum,
    kpi_dir,
    predicted_sums,
    read_cube_meta,
    read_segment_meta,
    scores_stamp,
    segment_dir,
)
from features.kpis.definitions import ALL, KpiTable
from features.kpis.sql import FACT_ROWS, fact_sources
from features.lake.tables import sql_date


def kpis(
    settings: Settings, start: date, end: date, by: Grouping | None = None, cache: KpiCache | None = None
) -> KpiTable:
    """The KPIs of [start, end] (local days of the business, both included), overall or per group, from the cube.
    A long-lived caller passes its own `cache`; without one, the cube is loaded for this answer."""
    check_grouping(by)
    check_period(start, end)
    if by in SEGMENT_GROUPINGS:
        folder, meta = segment_dir(settings) / by, read_segment_meta(settings, by)
    else:
        folder, meta = kpi_dir(settings), read_cube_meta(settings)
    question = Question.of(start, end, by)
    if cache is None:  # a one-off question: the cube is loaded for this answer only
        with KpiCache() as own:
            return _from_cube(settings, folder, meta, question, own)
    return _from_cube(settings, folder, meta, question, cache)


def _from_cube(settings: Settings, folder: Path, meta: CubeMeta, question: Question, cache: KpiCache) -> KpiTable:
    loaded = cache.cube(folder, meta)
    predicted = _predicted_clv(settings, question.by, cache)
    with closing(loaded.con.cursor()) as con:
        return _answer(con, loaded.orders, meta, question, predicted)


def _predicted_clv(settings: Settings, by: str | None, cache: KpiCache) -> dict[str, PredictedSum] | None:
    """(sum of predicted value, customers) per group from the latest batch scores; None
    when there are none (or they were scored on an older lake) or the grouping is by period."""
    if by in PERIOD_GROUPINGS:
        return None
    stamp = scores_stamp(settings)
    if stamp is None:
        return None
    return cache.predicted(segment_dir(settings), stamp, lambda: predicted_sums(settings)).get(by)


def _answer(
    con: duckdb.DuckDBPyConnection,
    orders: CustomerOrders,
    meta: CubeMeta,
    question: Question,
    predicted: dict[str, PredictedSum] | None,
) -> KpiTable:
    parts = Parts()
    # additive facts: one scan of the daily cube
    columns = [column for source in fact_sources(meta.tables) for column in FACT_ROWS[source][1]]
    sums = ", ".join(f"sum({column})" for column in columns)
    query = f"SELECT {question.label_sql} AS grp, {sums} FROM daily WHERE {question.within_sql} GROUP BY grp"
    parts.add(con.execute(query).fetchall(), columns)
    if "tickets" in meta.tables:
        parts.set_durations(_ticket_durations(con, orders, question))
    parts.add(_customer_counts(orders, question), CUSTOMER_PARTS)
    groups = question.groups(parts, meta)
    _cohorts(con, question, groups, parts)
    parts.set_predicted(predicted, groups)
    return kpi_table(question, groups, parts, meta)


# ---------------------------------------------------------------- on the cube's arrays


def _epoch_day(value: date) -> np.int32:
    # an int32 key: numpy would copy the whole int32 array to compare it with a Python int
    return np.int32((value - date(1970, 1, 1)).days)


def _customer_counts(orders: CustomerOrders, question: Question) -> list[tuple[str, int, int, int]]:
    """Active, new and repeat customers per group, exactly as the SQL over customer_orders counts
    them: a row counts as active when its previous order is before its group's first day, new when
    there is none, repeat when the previous is in the group but the one before is not. Customer rows
    carry the customer's acquisition channel, so by channel they group by it."""
    out: list[tuple[str, int, int, int]] = []

    def counts(prev: np.ndarray, prev2: np.ndarray, first: np.int32) -> tuple[int, int, int]:
        before = prev < first
        active = int(np.count_nonzero(before))
        new = int(np.count_nonzero(prev == NO_DAY))
        repeat = int(np.count_nonzero(~before & (prev2 < first)))
        return active, new, repeat

    def within(day: np.ndarray, first: date, last: date) -> slice:
        a = int(np.searchsorted(day, _epoch_day(first), "left"))
        return slice(a, a + int(np.searchsorted(day[a:], _epoch_day(last), "right")))

    if question.by_customer:
        split = orders.by_channel if question.dimension == "channel" else orders.by_city
        for name, (day, prev, prev2) in split.items():
            rows = within(day, question.start, question.end)
            if rows.start < rows.stop:
                out.append((name, *counts(prev[rows], prev2[rows], _epoch_day(question.start))))
        return out
    for label, (first, last) in question.spans.items():
        rows = within(orders.day, first, last)
        if rows.start < rows.stop:
            out.append((label, *counts(orders.prev_day[rows], orders.prev2_day[rows], _epoch_day(first))))
    return out


def _ticket_durations(
    con: duckdb.DuckDBPyConnection, orders: CustomerOrders, question: Question
) -> list[tuple[str, str, int, float, float]]:
    """(group, measure, count, sum of hours, median hours) like the SQL over ticket_durations. The
    median's middle one or two values are picked here and DuckDB's median of just those gives
    exactly the median DuckDB computes over the whole group."""
    found: list[tuple[str, str, int, float]] = []
    middles: list[tuple[int, float]] = []
    for measure, splits in orders.tickets.items():
        if question.by_customer:
            runs = [(name, day, hours, question.start, question.end)
                    for name, (day, hours) in splits[question.dimension].items()]  # fmt: skip
        else:
            day, hours = splits[None][ALL]
            runs = [(label, day, hours, first, last) for label, (first, last) in question.spans.items()]
        for label, day, hours, first, last in runs:
            a = int(np.searchsorted(day, _epoch_day(first), "left"))
            b = int(np.searchsorted(day, _epoch_day(last), "right"))
            if a >= b:
                continue
            values = hours[a:b]
            n = b - a
            picked = np.partition(values, [(n - 1) // 2, n // 2])
            number = len(found)
            middles.append((number, float(picked[(n - 1) // 2])))
            if n % 2 == 0:
                middles.append((number, float(picked[n // 2])))
            found.append((label, measure, n, float(values.sum())))
    if not found:
        return []
    rows = con.execute(
        "SELECT number, median(hours) FROM (SELECT unnest($numbers) AS number, unnest($hours) AS hours) "
        "GROUP BY number",
        {"numbers": [number for number, _ in middles], "hours": [value for _, value in middles]},
    ).fetchall()
    median_of = {int(number): float(value) for number, value in rows}
    return [(label, measure, n, total, median_of[number]) for number, (label, measure, n, total) in enumerate(found)]


# ---------------------------------------------------------------- on the cube's customer_daily table


def _cohorts(con: duckdb.DuckDBPyConnection, question: Question, groups: Groups, parts: Parts) -> None:
    """The churn cohort at each group's first day and historic CLV at its last, in two queries."""
    spans, complete = groups.spans, groups.complete
    starts = sorted({spans[label][0] for label in complete})
    if starts:
        days = ", ".join(sql_date(day) for day in starts)
        query = (
            f"SELECT {question.label_sql} AS grp, day, sum(churn_base), sum(churn_retained) "
            f"FROM customer_daily WHERE day IN ({days}) GROUP BY ALL"
        )
        for label, day, base, retained in con.execute(query).fetchall():
            if label in complete and spans[label][0] == day:
                values = parts.of(label)
                values["churn_base"] = values.get("churn_base", 0.0) + float(base)
                values["churn_retained"] = values.get("churn_retained", 0.0) + float(retained)
        for label in complete:
            values = parts.of(label)
            values.setdefault("churn_base", 0.0)
            values.setdefault("churn_retained", 0.0)
            values["churned_customers"] = values["churn_base"] - values["churn_retained"]
    end = sql_date(question.end)
    if question.by_customer:
        query = (
            f"SELECT {question.dimension}, sum(revenue), sum(new_customers) FROM customer_daily "
            f"WHERE day <= {end} GROUP BY ALL"
        )
        for label, revenue, customers in con.execute(query).fetchall():
            if label in spans:
                parts.of(label).update(clv_revenue=float(revenue), clv_customers=float(customers))
        for label in groups.labels:
            parts.of(label).setdefault("clv_revenue", 0.0)
            parts.of(label).setdefault("clv_customers", 0.0)
        return
    # over time: running totals per day, read at each group's last day
    query = (
        f"SELECT day, sum(sum(revenue)) OVER by_day, sum(sum(new_customers)) OVER by_day "
        f"FROM customer_daily WHERE day <= {end} GROUP BY day WINDOW by_day AS (ORDER BY day) ORDER BY day"
    )
    running = con.execute(query).fetchall()
    running_days = [row[0] for row in running]
    for label in groups.labels:
        at = bisect_right(running_days, spans[label][1]) - 1
        revenue, customers = (float(running[at][1]), float(running[at][2])) if at >= 0 else (0.0, 0.0)
        parts.of(label).update(clv_revenue=revenue, clv_customers=customers)
