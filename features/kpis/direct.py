"""`kpis_direct()`: the same KpiTable as `kpis()`, computed by scanning the lake itself (distinct
counts, medians and cohorts from raw rows). Slow; it is the oracle the tests and benchmark check."""

from __future__ import annotations

from contextlib import closing
from datetime import date, timedelta

import duckdb

from custlens.settings import Settings
from features.kpis.answer import CUSTOMER_PARTS, Parts, Question, kpi_table
from features.kpis.arguments import PERIOD_GROUPINGS, SEGMENT_GROUPINGS, Grouping, check_grouping, check_period
from features.kpis.cube import CubeMeta, PredictedSum, has_scores, predicted_sums, read_segment_meta, segment_dir
from features.kpis.definitions import KpiTable
from features.kpis.source import connect
from features.kpis.sql import (
    CUSTOMER_DIMS_SQL,
    FACT_ROWS,
    TICKET_DURATION_ROWS_SQL,
    fact_sources,
    fill,
    lake_sources,
    segment_dims_sql,
)
from features.lake.tables import net_revenue_sql, present_tables, sql_date


def kpis_direct(settings: Settings, start: date, end: date, by: Grouping | None = None) -> KpiTable:
    """The same table as `kpis()`, computed by scanning the lake itself (slow; the tests' oracle)."""
    check_grouping(by)
    check_period(start, end)
    present = present_tables(settings)
    dims_sql = CUSTOMER_DIMS_SQL
    if by in SEGMENT_GROUPINGS:
        read_segment_meta(settings, by)  # the scores exist and fit this lake
        dims_sql = segment_dims_sql(by, segment_dir(settings) / "assignments.parquet")
    with closing(connect(settings)) as con:
        tables, first_day, last_day = lake_sources(con, settings, present, dims_sql)
        meta = CubeMeta.of_lake(settings, present, first_day, last_day, stamp="")
        predicted = None
        if by not in PERIOD_GROUPINGS and has_scores(settings):
            predicted = predicted_sums(settings, con).get(by)
        return _answer(con, tables, meta, Question.of(start, end, by), predicted)


def _answer(
    con: duckdb.DuckDBPyConnection,
    tables: dict[str, str],
    meta: CubeMeta,
    question: Question,
    predicted: dict[str, PredictedSum] | None,
) -> KpiTable:
    parts = Parts()
    # additive facts: one scan of the lake per source
    for source in fact_sources(meta.tables):
        rows_sql, columns = FACT_ROWS[source]
        sums = ", ".join(f"sum({column})" for column in columns)
        query = (
            f"SELECT {question.label_sql} AS grp, {sums} FROM ({fill(rows_sql, tables)}) "
            f"WHERE {question.within_sql} GROUP BY grp"
        )
        parts.add(con.execute(query).fetchall(), columns)
    if "tickets" in meta.tables:  # means and exact medians
        query = (
            f"SELECT {question.label_sql} AS grp, measure, count(*), sum(hours), median(hours) "
            f"FROM ({fill(TICKET_DURATION_ROWS_SQL, tables)}) WHERE {question.within_sql} GROUP BY ALL"
        )
        parts.set_durations(con.execute(query).fetchall())
    parts.add(con.execute(_customers_sql(tables, question)).fetchall(), CUSTOMER_PARTS)
    groups = question.groups(parts, meta)
    # the churn cohort at each group's first day, and historic CLV at each group's last day
    group_of = f" AND {question.dimension} = ?" if question.by_customer else ""
    for label in groups.labels:
        first, last = groups.spans[label]
        values = parts.of(label)
        if label in groups.complete:
            values.update(_churn_cohort(con, tables, meta, first, label, group_of))
        values.update(_clv(con, tables, last, label, group_of))
    parts.set_predicted(predicted, groups)
    return kpi_table(question, groups, parts, meta)


def _customers_sql(tables: dict[str, str], question: Question) -> str:
    """Active, new and repeat customers per group; customer rows carry the customer's acquisition
    channel, so by channel they group by it."""
    return f"""
        WITH {_completed(tables)},
        first_orders AS (SELECT customer_id, min(day) AS first_day FROM completed GROUP BY customer_id),
        per_customer AS (
            SELECT {question.label_sql} AS grp, customer_id, count(*) AS orders_in_group,
                   min({question.start_sql}) AS group_start
            FROM completed WHERE {question.within_sql} GROUP BY ALL
        )
        SELECT grp, count(*), count(*) FILTER (WHERE first_day >= group_start),
               count(*) FILTER (WHERE orders_in_group >= 2)
        FROM per_customer JOIN first_orders USING (customer_id) GROUP BY grp
    """


def _completed(tables: dict[str, str]) -> str:
    """The CTE `completed`: the lake's completed orders, each with its day and its customer's
    acquisition channel and city."""
    return f"""completed AS (
            SELECT orders.customer_id, CAST(orders.ordered_at AS DATE) AS day,
                   customer_dims.acquisition_channel AS channel, customer_dims.city
            FROM {tables["orders"]} AS orders LEFT JOIN customer_dims USING (customer_id)
            WHERE orders.status = 'completed'
        )"""


def _churn_cohort(
    con: duckdb.DuckDBPyConnection, tables: dict[str, str], meta: CubeMeta, first: date, label: str, group_of: str
) -> dict[str, float]:
    """The lake's churn cohort at `first`: customers who bought in the activity window before it, and
    those of them who bought again within the churn window from it."""
    since = sql_date(first - timedelta(days=meta.activity_days))
    until = sql_date(first + timedelta(days=meta.churn_days))
    query = f"""
        WITH {_completed(tables)},
        base AS (
            SELECT DISTINCT customer_id FROM completed
            WHERE day >= {since} AND day < {sql_date(first)}{group_of}
        ),
        came_back AS (
            SELECT DISTINCT customer_id FROM completed WHERE day >= {sql_date(first)} AND day < {until}
        )
        SELECT count(*), count(came_back.customer_id) FROM base LEFT JOIN came_back USING (customer_id)
    """
    row = con.execute(query, [label] if group_of else []).fetchone()
    assert row is not None
    base, retained = float(row[0] or 0), float(row[1] or 0)
    return {"churn_base": base, "churn_retained": retained, "churned_customers": base - retained}


def _clv(
    con: duckdb.DuckDBPyConnection, tables: dict[str, str], last: date, label: str, group_of: str
) -> dict[str, float]:
    """The customers' lifetime net revenue (completed orders minus refunds) and buyers by `last`."""
    query = f"""
        SELECT sum(CAST({net_revenue_sql("orders")} AS DOUBLE)),
               count(DISTINCT orders.customer_id) FILTER (WHERE orders.status = 'completed')
        FROM {tables["orders"]} AS orders LEFT JOIN customer_dims USING (customer_id)
        WHERE orders.status IN ('completed', 'returned') AND CAST(orders.ordered_at AS DATE) <= {sql_date(last)}
        {group_of.replace("channel", "acquisition_channel")}
    """
    row = con.execute(query, [label] if group_of else []).fetchone()
    assert row is not None
    return {"clv_revenue": float(row[0] or 0), "clv_customers": float(row[1] or 0)}
