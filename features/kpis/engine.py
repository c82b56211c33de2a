"""The KPI engine: a small daily KPI cube built set-wise in DuckDB from the lake right after ingest
(`<data_dir>/kpis/`), and `kpis()`, which answers any period and grouping by summing the cube and
dividing at the end. `kpis_direct()` computes the same numbers by scanning the lake (the oracle).

Every formula is written once in docs/kpis.md. Days are UTC days. The cube holds additive parts
only (numerators and denominators, never ratios), plus two compact row sets for what does not add
up over days: one row per completed order with the customer's two previous order days (distinct
customers), and one row per ticket duration (exact medians).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import threading
import uuid
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, get_args

import duckdb
import numpy as np
import pandas as pd
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from custlens.errors import CustlensError
from custlens.settings import Settings

Grouping = Literal["month", "week", "channel", "city", "segment", "behaviour"]
GROUPINGS: tuple[str, ...] = get_args(Grouping)
# Groupings by the customers' latest batch scores (`custlens score`): name -> the score column. Each
# has its own cube, built like the main one with the segment standing in the city's place.
SEGMENT_GROUPINGS: dict[str, str] = {"segment": "rfm_segment", "behaviour": "behavioural_segment"}
UNSCORED = "(not scored)"  # a customer the latest batch run did not score
NONE_LABEL = "(none)"  # a row without a channel or city is grouped under this label
ALL = "all"
OPTIONAL_TABLES = ("engagement_events", "surveys", "tickets", "marketing_spend")
SESSION_GRACE_SECONDS = 300  # an order confirmed shortly after the session's last recorded second
SESSION_DEFAULT_SECONDS = 1800  # a session with no duration lasts the web-analytics default, 30 min
CUBE_FILES = ("daily", "customer_daily", "customer_orders", "ticket_durations")

# ---------------------------------------------------------------- row-level facts, one query per source
#
# Each query yields one row per fact with day (UTC), channel, city (the customer's) and its additive
# parts as columns. The cube sums them per (day, channel, city); the direct scan sums them per group
# over the period. {orders} etc. read a lake table; {customer_dims} is customer_id -> city, channel.

ORDER_ROWS_SQL = """
SELECT CAST(orders.ordered_at AS DATE) AS day,
       coalesce(orders.channel, '(none)') AS channel,
       customer_dims.city,
       CAST(orders.status = 'completed' AS BIGINT) AS orders,
       CASE WHEN orders.status = 'completed' THEN CAST(orders.net_amount AS DOUBLE) ELSE 0 END AS revenue,
       CAST(orders.status = 'returned' AS BIGINT) AS returned_orders,
       -- a returned order was a purchase first; a cancelled one never was
       CAST(orders.status IN ('completed', 'returned') AS BIGINT) AS purchased_orders
FROM {orders} AS orders
LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
"""

SESSION_ROWS_SQL = """
WITH sessions AS (
    SELECT customer_id, session_id,
           min(occurred_at) AS started_at,
           arg_min(channel, occurred_at) AS channel,
           arg_min(duration_s, occurred_at) AS duration_s
    FROM {engagement_events}
    WHERE event_type = 'session_start' AND session_id IS NOT NULL
    GROUP BY customer_id, session_id
),
session_events AS (
    SELECT customer_id, session_id,
           bool_or(event_type = 'bounce') AS bounced,
           bool_or(event_type = 'add_to_cart') AS carted
    FROM {engagement_events}
    WHERE session_id IS NOT NULL AND event_type IN ('bounce', 'add_to_cart')
    GROUP BY customer_id, session_id
),
converted AS (
    -- a session ends in an order when the same customer places a (not cancelled) order between the
    -- session start and its end (start + duration) plus a short grace for the confirmation
    SELECT DISTINCT sessions.customer_id, sessions.session_id
    FROM sessions
    JOIN {orders} AS orders
      ON orders.customer_id = sessions.customer_id
     AND orders.status <> 'cancelled'
     AND orders.ordered_at >= sessions.started_at
     AND orders.ordered_at <= sessions.started_at
         + to_seconds(CAST(coalesce(sessions.duration_s, {default_seconds}) AS BIGINT) + {grace_seconds})
)
SELECT CAST(sessions.started_at AS DATE) AS day,
       coalesce(sessions.channel, '(none)') AS channel,
       customer_dims.city,
       1 AS sessions,
       CAST(coalesce(session_events.bounced, false) AS BIGINT) AS bounced_sessions,
       CAST(converted.session_id IS NOT NULL AS BIGINT) AS converted_sessions,
       CAST(coalesce(session_events.carted, false) AS BIGINT) AS carted_sessions,
       CAST(coalesce(session_events.carted, false) AND converted.session_id IS NULL AS BIGINT) AS abandoned_carts
FROM sessions
LEFT JOIN session_events USING (customer_id, session_id)
LEFT JOIN converted USING (customer_id, session_id)
LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
"""

MESSAGE_ROWS_SQL = """
SELECT CAST(events.occurred_at AS DATE) AS day,
       coalesce(events.channel, '(none)') AS channel,
       customer_dims.city,
       CAST(event_type = 'email_sent' AS BIGINT) AS emails_sent,
       CAST(event_type = 'email_open' AS BIGINT) AS emails_opened,
       CAST(event_type = 'email_click' AS BIGINT) AS emails_clicked,
       CAST(event_type = 'email_unsubscribe' AS BIGINT) AS unsubscribes,
       CAST(event_type = 'email_spam_report' AS BIGINT) AS spam_reports,
       CAST(event_type = 'sms_sent' AS BIGINT) AS sms_sent,
       CAST(event_type = 'sms_delivered' AS BIGINT) AS sms_delivered,
       CAST(event_type = 'social_share' AS BIGINT) AS social_shares,
       CAST(event_type = 'referral' AS BIGINT) AS referrals
FROM {engagement_events} AS events
LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
WHERE event_type IN ('email_sent', 'email_open', 'email_click', 'email_unsubscribe', 'email_spam_report',
                     'sms_sent', 'sms_delivered', 'social_share', 'referral')
"""

SURVEY_ROWS_SQL = """
SELECT CAST(surveys.responded_at AS DATE) AS day,
       coalesce(surveys.channel, '(none)') AS channel,
       customer_dims.city,
       CAST(survey_type = 'csat' AS BIGINT) AS csat_responses,
       CAST(survey_type = 'csat' AND score >= 4 AS BIGINT) AS csat_satisfied,
       CAST(survey_type = 'nps' AS BIGINT) AS nps_responses,
       CAST(survey_type = 'nps' AND score >= 9 AS BIGINT) AS nps_promoters,
       CAST(survey_type = 'nps' AND score <= 6 AS BIGINT) AS nps_detractors
FROM {surveys} AS surveys
LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
"""

TICKET_ROWS_SQL = """
SELECT CAST(tickets.opened_at AS DATE) AS day,
       coalesce(tickets.channel, '(none)') AS channel,
       customer_dims.city,
       1 AS tickets
FROM {tickets} AS tickets
LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
"""

SPEND_ROWS_SQL = """
-- spend is per acquisition channel and has no city
SELECT date AS day, coalesce(channel, '(none)') AS channel, CAST(NULL AS VARCHAR) AS city,
       CAST(spend AS DOUBLE) AS marketing_spend
FROM {marketing_spend}
"""

FACT_ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    # source table: (row query, its additive parts)
    "orders": (ORDER_ROWS_SQL, ("orders", "revenue", "returned_orders", "purchased_orders")),
    "engagement_events": (
        SESSION_ROWS_SQL,
        ("sessions", "bounced_sessions", "converted_sessions", "carted_sessions", "abandoned_carts"),
    ),
    "engagement_messages": (
        MESSAGE_ROWS_SQL,
        (
            "emails_sent",
            "emails_opened",
            "emails_clicked",
            "unsubscribes",
            "spam_reports",
            "sms_sent",
            "sms_delivered",
            "social_shares",
            "referrals",
        ),
    ),
    "surveys": (
        SURVEY_ROWS_SQL,
        ("csat_responses", "csat_satisfied", "nps_responses", "nps_promoters", "nps_detractors"),
    ),
    "tickets": (TICKET_ROWS_SQL, ("tickets",)),
    "marketing_spend": (SPEND_ROWS_SQL, ("marketing_spend",)),
}
FACT_TABLE = {"engagement_messages": "engagement_events"}  # row query -> the lake table it reads

TICKET_DURATION_ROWS_SQL = """
-- first response time counts on the day the ticket was opened, time to resolution on the day it was
-- resolved; a ticket never answered (or never resolved) has no duration and is left out
SELECT CAST(opened_at AS DATE) AS day, coalesce(tickets.channel, '(none)') AS channel, customer_dims.city,
       'frt' AS measure, (epoch_us(first_response_at) - epoch_us(opened_at)) / 3600e6 AS hours
FROM {tickets} AS tickets
LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
WHERE first_response_at >= opened_at
UNION ALL
SELECT CAST(resolved_at AS DATE) AS day, coalesce(tickets.channel, '(none)') AS channel, customer_dims.city,
       'ttr' AS measure, (epoch_us(resolved_at) - epoch_us(opened_at)) / 3600e6 AS hours
FROM {tickets} AS tickets
LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
WHERE resolved_at >= opened_at
"""

# ---------------------------------------------------------------- the cube

CUSTOMER_DIMS_SQL = """
SELECT customer_id,
       coalesce(city, '(none)') AS city,
       coalesce(acquisition_channel, '(none)') AS acquisition_channel
FROM {customers}
"""

# A segment cube's dimensions: the customer's segment from the scores in the city's place.
SEGMENT_DIMS_SQL = """
SELECT customers.customer_id,
       coalesce(assignments.{segment_column}, '{unscored}') AS city,
       coalesce(customers.acquisition_channel, '(none)') AS acquisition_channel
FROM {customers} AS customers
LEFT JOIN read_parquet({assignments}) AS assignments USING (customer_id)
"""

CUSTOMER_ORDERS_SQL = """
-- one row per completed order with the customer's previous two order days: a customer is active
-- in [s, e] once, on the order whose previous one is before s (see docs/kpis.md)
WITH completed AS (
    SELECT orders.customer_id, orders.order_id, orders.ordered_at, CAST(orders.ordered_at AS DATE) AS day,
           customer_dims.acquisition_channel AS channel, customer_dims.city,
           CAST(orders.net_amount AS DOUBLE) AS revenue
    FROM {orders} AS orders
    LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
    WHERE orders.status = 'completed'
)
SELECT day,
       lag(day) OVER by_customer AS prev_day,
       lag(day, 2) OVER by_customer AS prev2_day,
       lead(day) OVER by_customer AS next_day,
       coalesce(channel, '(none)') AS channel,
       coalesce(city, '(none)') AS city,
       revenue
FROM completed
WINDOW by_customer AS (PARTITION BY customer_id ORDER BY ordered_at, order_id)
"""

CUSTOMER_DAILY_SQL = """
-- per (day s, acquisition channel, city): first orders, revenue, and the churn cohort of s: customers
-- whose last order before s is within the activity window (base) and who order again within the
-- churn window from s (retained). An order on day d followed by the next on day n puts its customer
-- in the base for s in [d+1, min(n, d+A)] and retained for s in [max(d+1, n-W+1), min(n, d+A)].
WITH base_spans AS (
    SELECT channel, city, day + 1 AS first_s, least(coalesce(next_day, day + {activity_days}), day + {activity_days})
           AS last_s
    FROM customer_orders
),
retained_spans AS (
    SELECT channel, city, greatest(day + 1, next_day - {churn_days} + 1) AS first_s,
           least(next_day, day + {activity_days}) AS last_s
    FROM customer_orders
    WHERE next_day IS NOT NULL
),
edges AS (
    SELECT channel, city, first_s AS day, 1 AS base_change, 0 AS retained_change FROM base_spans WHERE first_s <= last_s
    UNION ALL
    SELECT channel, city, last_s + 1, -1, 0 FROM base_spans WHERE first_s <= last_s
    UNION ALL
    SELECT channel, city, first_s, 0, 1 FROM retained_spans WHERE first_s <= last_s
    UNION ALL
    SELECT channel, city, last_s + 1, 0, -1 FROM retained_spans WHERE first_s <= last_s
),
daily_changes AS (
    SELECT day, channel, city, sum(base_change) AS base_change, sum(retained_change) AS retained_change
    FROM edges
    GROUP BY ALL
),
daily_orders AS (
    SELECT day, channel, city,
           count(*) FILTER (WHERE prev_day IS NULL) AS new_customers,
           sum(revenue) AS revenue
    FROM customer_orders
    GROUP BY ALL
),
calendar AS (
    SELECT CAST(range AS DATE) AS day
    FROM range(CAST({first_day} AS TIMESTAMP), CAST({last_day} AS TIMESTAMP) + INTERVAL 1 DAY, INTERVAL 1 DAY)
),
dense AS (
    SELECT calendar.day, groups.channel, groups.city
    FROM calendar CROSS JOIN (SELECT DISTINCT channel, city FROM customer_orders) AS groups
),
cohorts AS (
    SELECT dense.day, dense.channel, dense.city,
           coalesce(daily_orders.new_customers, 0) AS new_customers,
           coalesce(daily_orders.revenue, 0) AS revenue,
           sum(coalesce(daily_changes.base_change, 0)) OVER running AS churn_base,
           sum(coalesce(daily_changes.retained_change, 0)) OVER running AS churn_retained
    FROM dense
    LEFT JOIN daily_orders USING (day, channel, city)
    LEFT JOIN daily_changes USING (day, channel, city)
    WINDOW running AS (PARTITION BY dense.channel, dense.city ORDER BY dense.day ROWS UNBOUNDED PRECEDING)
)
SELECT * FROM cohorts
WHERE new_customers <> 0 OR revenue <> 0 OR churn_base <> 0 OR churn_retained <> 0
ORDER BY day
"""


def kpi_dir(settings: Settings) -> Path:
    """Where the KPI cube lives."""
    return settings.data_dir / "kpis"


@dataclass(frozen=True)
class CubeMeta:
    """What a cube was built from: the lake tables present, the day span, the churn windows."""

    tables: tuple[str, ...]
    first_day: date
    last_day: date
    activity_days: int
    churn_days: int
    lake_stamp: str

    def to_json(self) -> str:
        values = asdict(self)
        values.update(first_day=self.first_day.isoformat(), last_day=self.last_day.isoformat())
        return json.dumps(values, indent=2)

    @classmethod
    def read(cls, path: Path) -> CubeMeta:
        values = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            tables=tuple(values["tables"]),
            first_day=date.fromisoformat(values["first_day"]),
            last_day=date.fromisoformat(values["last_day"]),
            activity_days=int(values["activity_days"]),
            churn_days=int(values["churn_days"]),
            lake_stamp=str(values["lake_stamp"]),
        )


def build_kpi_cube(settings: Settings) -> Path:
    """Aggregate the lake into the daily KPI cube under <data_dir>/kpis/ and return that folder;
    the old cube is replaced whole (a reader sees the old cube or the new one)."""
    new_dir = settings.data_dir / f".kpis-new-{uuid.uuid4().hex}"
    new_dir.mkdir(parents=True)
    try:
        _build_cube(settings, new_dir, dims_sql=CUSTOMER_DIMS_SQL, stamp=_lake_stamp(settings))
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    return _swap_in(new_dir, kpi_dir(settings))


def _build_cube(settings: Settings, new_dir: Path, dims_sql: str, stamp: str) -> None:
    present = _present_tables(settings)
    try:
        with closing(_connect(settings)) as con:
            tables, first_day, last_day = _lake_tables(con, settings, present, dims_sql)
            parts = []
            for source, (rows_sql, columns) in FACT_ROWS.items():
                if FACT_TABLE.get(source, source) not in ("orders", *present):
                    continue
                sums = ", ".join(f"sum({column}) AS {column}" for column in columns)
                parts.append(
                    f"SELECT day, channel, coalesce(city, '{NONE_LABEL}') AS city, {sums} "
                    f"FROM ({_fill(rows_sql, tables)}) GROUP BY ALL"
                )
            # one CTE per source, stacked by column name, summed once more per (day, channel, city)
            sources = ",\n".join(f"source_{number} AS ({part})" for number, part in enumerate(parts))
            stacked = " UNION ALL BY NAME ".join(f"SELECT * FROM source_{number}" for number in range(len(parts)))
            _copy(
                con,
                f"WITH {sources}, stacked AS ({stacked}) "
                "SELECT day, channel, city, sum(COLUMNS(* EXCLUDE (day, channel, city))) FROM stacked "
                "GROUP BY ALL ORDER BY day, channel, city",
                new_dir / "daily.parquet",
            )
            con.execute(f"CREATE TEMP TABLE customer_orders AS {CUSTOMER_ORDERS_SQL.format(**tables)}")
            _copy(
                con,
                "SELECT day, prev_day, prev2_day, channel, city FROM customer_orders ORDER BY day",
                new_dir / "customer_orders.parquet",
            )
            _copy(
                con,
                CUSTOMER_DAILY_SQL.format(
                    activity_days=settings.training.activity_window_days,
                    churn_days=settings.training.churn_window_days,
                    first_day=_date_literal(first_day),
                    last_day=_date_literal(last_day),
                ),
                new_dir / "customer_daily.parquet",
            )
            durations = (
                f"SELECT day, channel, coalesce(city, '{NONE_LABEL}') AS city, measure, hours "
                f"FROM ({_fill(TICKET_DURATION_ROWS_SQL, tables)}) ORDER BY day"
                if "tickets" in present
                else "SELECT CAST(NULL AS DATE) AS day, '' AS channel, '' AS city, '' AS measure, "
                "CAST(NULL AS DOUBLE) AS hours LIMIT 0"
            )
            _copy(con, durations, new_dir / "ticket_durations.parquet")
        meta = CubeMeta(
            tables=("customers", "orders", *present),
            first_day=first_day,
            last_day=last_day,
            activity_days=settings.training.activity_window_days,
            churn_days=settings.training.churn_window_days,
            lake_stamp=stamp,
        )
        (new_dir / "meta.json").write_text(meta.to_json(), encoding="utf-8")
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0].rstrip(".")
        raise CustlensError(
            f"building the KPI cube from {settings.lake_dir} failed: {reason}. The old cube was left as it was"
        ) from exc


def _swap_in(new_dir: Path, target: Path) -> Path:
    """Replace `target` by `new_dir` whole: a reader sees the old folder or the new one."""
    old_dir = target.parent / f".{target.name}-old-{uuid.uuid4().hex}"
    if target.exists():
        os.rename(target, old_dir)
    os.rename(new_dir, target)
    shutil.rmtree(old_dir, ignore_errors=True)
    return target


def _segment_dims_sql(grouping: str, assignments: Path) -> str:
    """SEGMENT_DIMS_SQL for one segment grouping over one run's assignments file."""
    return (SEGMENT_DIMS_SQL.replace("{segment_column}", SEGMENT_GROUPINGS[grouping])
            .replace("{unscored}", UNSCORED).replace("{assignments}", _literal(assignments)))  # fmt: skip


def segment_dir(settings: Settings) -> Path:
    """Where the cubes by segment and the latest scores' segments and predicted values live."""
    return settings.data_dir / "kpis-by-segment"


def segment_as_of(settings: Settings) -> date | None:
    """The as-of date of the scores the KPI cubes by segment come from; None before any."""
    path = segment_dir(settings) / "scores.json"
    if not path.is_file():
        return None
    return date.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["as_of"])


def build_segment_cubes(settings: Settings, scores: pd.DataFrame, as_of: date) -> Path:
    """The KPI cubes by RFM segment and by behavioural segment, from one batch run's scores
    (customer_id, rfm_segment, behavioural_segment, predicted_clv_12m): `custlens score` calls it
    after writing the scores. Every customer is grouped by their segment at `as_of`, for any period
    (segments describe who the customers are now, not who they were then)."""
    missing = {"customer_id", *SEGMENT_GROUPINGS.values(), "predicted_clv_12m"} - set(scores.columns)
    if missing:
        raise CustlensError(f"segment cubes need the score columns {sorted(missing)}")
    new_dir = settings.data_dir / f".kpis-by-segment-new-{uuid.uuid4().hex}"
    new_dir.mkdir(parents=True)
    try:
        assignments = new_dir / "assignments.parquet"
        columns = ["customer_id", *SEGMENT_GROUPINGS.values(), "predicted_clv_12m"]
        scores[columns].to_parquet(assignments, index=False)
        stamp = f"{_lake_stamp(settings)}|scores {as_of.isoformat()} {uuid.uuid4().hex}"
        for grouping in SEGMENT_GROUPINGS:
            cube = new_dir / grouping
            cube.mkdir()
            _build_cube(settings, cube, _segment_dims_sql(grouping, assignments), stamp)
        (new_dir / "scores.json").write_text(json.dumps({"as_of": as_of.isoformat(), "stamp": stamp}), "utf-8")
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    return _swap_in(new_dir, segment_dir(settings))


# ---------------------------------------------------------------- the answer


@dataclass(frozen=True)
class KpiValue:
    """One KPI of one group: its value with what it was divided from, or why it has none."""

    group: str
    kpi: str
    value: float | None
    numerator: float | None = None
    denominator: float | None = None
    missing: str | None = None


@dataclass(frozen=True)
class KpiTable:
    """The KPIs of a period, one column per group (or `all`)."""

    start: date
    end: date
    by: str | None
    groups: tuple[str, ...]
    values: tuple[KpiValue, ...]

    def get(self, kpi: str, group: str = ALL) -> KpiValue:
        for value in self.values:
            if value.kpi == kpi and value.group == group:
                return value
        raise KeyError((kpi, group))

    def records(self) -> list[dict[str, object]]:
        return [
            {"start": self.start.isoformat(), "end": self.end.isoformat(), **asdict(value)} for value in self.values
        ]

    def to_json(self) -> str:
        return json.dumps(
            {"start": self.start.isoformat(), "end": self.end.isoformat(), "by": self.by, "groups": list(self.groups),
             "kpis": [asdict(value) for value in self.values]},
            ensure_ascii=False, indent=2,
        )  # fmt: skip

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=["start", "end", "group", "kpi", "value", "numerator", "denominator", "missing"]
        )
        writer.writeheader()
        writer.writerows(self.records())
        return buffer.getvalue()

    def render(self) -> RenderableType:
        title = f"KPIs {self.start.isoformat()} .. {self.end.isoformat()}" + (f" by {self.by}" if self.by else "")
        table = Table(title=title, title_justify="left")
        table.add_column("KPI")
        for group in self.groups:
            table.add_column(group, justify="right")
        cells = {(value.kpi, value.group): value for value in self.values}
        for definition in KPIS:
            table.add_row(
                definition.label, *(_shown(cells[(definition.name, group)], definition) for group in self.groups)
            )
        reasons = sorted({value.missing for value in self.values if value.missing})
        notes = [Text.from_markup(f"[dim]— {reason}[/]") for reason in reasons[:12]]
        if len(reasons) > 12:
            notes.append(Text(f"... and {len(reasons) - 12} more reasons (see --format json)", style="dim"))
        return Group(table, *notes)


@dataclass(frozen=True)
class KpiDefinition:
    name: str
    label: str
    unit: Literal["count", "money", "share", "score", "hours", "ratio"]
    table: str  # the lake table it needs
    numerator: str | None = None
    denominator: str | None = None
    scale: float = 1.0
    empty: str = ""  # why there is no value when the denominator is 0


def _kpi(name: str, label: str, unit: str, table: str, numerator: str | None = None,
         denominator: str | None = None, scale: float = 1.0, empty: str = "") -> KpiDefinition:  # fmt: skip
    return KpiDefinition(name, label, unit, table, numerator, denominator, scale, empty)  # type: ignore[arg-type]


KPIS: tuple[KpiDefinition, ...] = (
    # experience
    _kpi("csat", "CSAT (share of 4-5)", "share", "surveys", "csat_satisfied", "csat_responses",
         empty="no CSAT responses in the period"),
    _kpi("nps", "NPS", "score", "surveys", "nps_net", "nps_responses", 100.0, "no NPS responses in the period"),
    _kpi("nps_responses", "NPS responses", "count", "surveys", "nps_responses"),
    _kpi("frt_mean_hours", "first response, mean (h)", "hours", "tickets", "frt_sum", "frt_count",
         empty="no ticket opened in the period got a first response"),
    _kpi("frt_median_hours", "first response, median (h)", "hours", "tickets", None, "frt_count",
         empty="no ticket opened in the period got a first response"),
    _kpi("ttr_mean_hours", "time to resolution, mean (h)", "hours", "tickets", "ttr_sum", "ttr_count",
         empty="no ticket was resolved in the period"),
    _kpi("ttr_median_hours", "time to resolution, median (h)", "hours", "tickets", None, "ttr_count",
         empty="no ticket was resolved in the period"),
    _kpi("tickets", "tickets opened", "count", "tickets", "tickets"),
    _kpi("tickets_per_100_active", "tickets per 100 active customers", "ratio", "tickets", "tickets",
         "active_customers", 100.0, "no active customers in the period"),
    # engagement and acquisition
    _kpi("sessions", "sessions", "count", "engagement_events", "sessions"),
    _kpi("bounce_rate", "bounce rate", "share", "engagement_events", "bounced_sessions", "sessions",
         empty="no sessions in the period"),
    _kpi("conversion_rate", "conversion rate", "share", "engagement_events", "converted_sessions", "sessions",
         empty="no sessions in the period"),
    _kpi("cart_abandonment_rate", "cart abandonment rate", "share", "engagement_events", "abandoned_carts",
         "carted_sessions", empty="no session added to a cart in the period"),
    _kpi("email_open_rate", "email open rate", "share", "engagement_events", "emails_opened", "emails_sent",
         empty="no emails sent in the period"),
    _kpi("email_ctr", "email click-through rate", "share", "engagement_events", "emails_clicked", "emails_sent",
         empty="no emails sent in the period"),
    _kpi("email_unsubscribe_rate", "unsubscribe rate", "share", "engagement_events", "unsubscribes", "emails_sent",
         empty="no emails sent in the period"),
    _kpi("email_spam_report_rate", "spam-report rate", "share", "engagement_events", "spam_reports", "emails_sent",
         empty="no emails sent in the period"),
    _kpi("sms_delivery_rate", "SMS delivery rate", "share", "engagement_events", "sms_delivered", "sms_sent",
         empty="no SMS sent in the period"),
    _kpi("new_customers", "new customers", "count", "orders", "new_customers"),
    _kpi("returning_customers", "returning customers", "count", "orders", "returning_customers"),
    _kpi("new_customer_share", "new customer share", "share", "orders", "new_customers", "active_customers",
         empty="no active customers in the period"),
    _kpi("social_shares", "social shares", "count", "engagement_events", "social_shares"),
    _kpi("referrals", "referrals", "count", "engagement_events", "referrals"),
    # commercial and retention
    _kpi("revenue", "revenue", "money", "orders", "revenue"),
    _kpi("orders", "orders", "count", "orders", "orders"),
    _kpi("aov", "average order value", "money", "orders", "revenue", "orders",
         empty="no completed orders in the period"),
    _kpi("return_rate", "return rate", "share", "orders", "returned_orders", "purchased_orders",
         empty="no purchases in the period"),
    _kpi("repeat_purchase_rate", "repeat purchase rate", "share", "orders", "repeat_customers", "active_customers",
         empty="no active customers in the period"),
    _kpi("active_customers", "active customers", "count", "orders", "active_customers"),
    _kpi("churn_rate", "realized churn rate", "share", "orders", "churned_customers", "churn_base"),
    _kpi("retention_rate", "retention rate", "share", "orders", "churn_retained", "churn_base"),
    _kpi("marketing_spend", "marketing spend", "money", "marketing_spend", "marketing_spend"),
    _kpi("cac", "CAC", "money", "marketing_spend", "marketing_spend", "new_customers",
         empty="no new customers in the period"),
    _kpi("historic_clv", "historic CLV", "money", "orders", "clv_revenue", "clv_customers"),
    _kpi("ltv_to_cac", "LTV:CAC", "ratio", "marketing_spend", "historic_clv", "cac"),
    _kpi("predicted_clv", "predicted CLV (next 12 months)", "money", "orders", "predicted_clv_total",
         "scored_customers", empty="no batch scores for these customers yet; run `custlens score`"),
)  # fmt: skip
KPI_NAMES = tuple(definition.name for definition in KPIS)


def kpis(settings: Settings, start: date, end: date, by: Grouping | None = None) -> KpiTable:
    """The KPIs of [start, end] (UTC days, both included), overall or per group, from the cube."""
    _check_arguments(start, end, by)
    if by in SEGMENT_GROUPINGS:
        folder = segment_dir(settings) / by
        meta = _read_meta(settings, folder)
    else:
        folder = kpi_dir(settings)
        meta = _read_meta(settings)
    loaded = _loaded_cube(folder, meta)
    orders = _loaded_customer_orders(folder, meta, loaded)
    with closing(loaded.cursor()) as con:
        table = _answer(con, meta, {name: name for name in CUBE_FILES}, start, end, _dimension(by), cube=True,
                        orders=orders, predicted=_predicted_clv(settings, by))  # fmt: skip
    return _as_grouped_by(table, by)


def _dimension(by: str | None) -> str | None:
    """The cube dimension a grouping reads: a segment sits in the city's place of its own cube."""
    return "city" if by in SEGMENT_GROUPINGS else by


def _as_grouped_by(table: KpiTable, by: str | None) -> KpiTable:
    if by not in SEGMENT_GROUPINGS:
        return table
    values = tuple(
        replace(value, missing=value.missing.replace("by city", f"by {by}")) if value.missing else value
        for value in table.values
    )
    return replace(table, by=by, values=values)


_PREDICTED: dict[Path, tuple[str, dict[str | None, dict[str, tuple[float, float]]]]] = {}


def _predicted_clv(settings: Settings, by: str | None) -> dict[str, tuple[float, float]] | None:
    """(sum of predicted 12-month value, customers) per group from the latest batch scores; None
    when there are none (or they were scored on an older lake) or the grouping is by period."""
    folder = segment_dir(settings)
    if by in ("month", "week") or not (folder / "scores.json").is_file():
        return None
    stamp = json.loads((folder / "scores.json").read_text(encoding="utf-8"))["stamp"]
    if stamp.split("|")[0] != _lake_stamp(settings):
        return None
    with _LOADING:
        cached = _PREDICTED.get(folder.resolve())
        if cached is None or cached[0] != stamp:
            with closing(_connect(settings)) as con:
                cached = (stamp, _predicted_clv_query(con, settings, folder))
            _PREDICTED[folder.resolve()] = cached
    return cached[1].get(by)


def _predicted_clv_query(
    con: duckdb.DuckDBPyConnection, settings: Settings, folder: Path
) -> dict[str | None, dict[str, tuple[float, float]]]:
    """Every grouping's predicted-value sums in one pass over the scores joined to the customers."""
    groups: dict[str | None, str] = {None: f"'{ALL}'", "channel": "acquisition_channel", "city": "city",
              **{name: f"coalesce({column}, '{UNSCORED}')" for name, column in SEGMENT_GROUPINGS.items()}}  # fmt: skip
    con.execute(
        f"CREATE TEMP TABLE scored AS SELECT assignments.*, dims.city, dims.acquisition_channel "
        f"FROM read_parquet({_literal(folder / 'assignments.parquet')}) AS assignments "
        f"JOIN ({CUSTOMER_DIMS_SQL.format(customers=_table_sources(settings, ())['customers'])}) AS dims "
        "USING (customer_id) WHERE predicted_clv_12m IS NOT NULL"
    )
    out: dict[str | None, dict[str, tuple[float, float]]] = {}
    for grouping, label_sql in groups.items():
        rows = con.execute(f"SELECT {label_sql}, sum(predicted_clv_12m), count(*) FROM scored GROUP BY 1").fetchall()
        out[grouping] = {str(label): (float(total), float(count)) for label, total, count in rows}
    return out


# One in-memory copy of each cube per process, replaced when the lake (and so the cube) changes: the
# service and the benchmark ask many questions, and reading the Parquet files each time cost more
# than answering. About 200 MB at 1,000,000 customers (the per-order rows are also kept as sorted
# numpy arrays, by day, by channel and by city, for distinct-customer counts in milliseconds).
_LOADED: dict[Path, tuple[str, duckdb.DuckDBPyConnection]] = {}
_LOADING = threading.Lock()


def _loaded_cube(folder: Path, meta: CubeMeta) -> duckdb.DuckDBPyConnection:
    key = folder.resolve()
    with _LOADING:
        loaded = _LOADED.get(key)
        if loaded is not None and loaded[0] == meta.lake_stamp:
            return loaded[1]
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        for name in CUBE_FILES:
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet({_literal(folder / f'{name}.parquet')})")
        if loaded is not None:
            loaded[1].close()
        _LOADED[key] = (meta.lake_stamp, con)
        return con


_NO_DAY = np.iinfo(np.int32).min  # a missing previous order day: before every day


@dataclass(frozen=True)
class _CustomerOrders:
    """The cube's per-order customer rows as arrays sorted by day (days since 1970-01-01), so that
    distinct-customer counts of any period are a slice and a few vectorised comparisons."""

    day: np.ndarray
    prev_day: np.ndarray  # _NO_DAY where the customer had no earlier order
    prev2_day: np.ndarray
    # the same rows split by acquisition channel and by city: name -> (day, prev_day, prev2_day)
    by_channel: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    by_city: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    # ticket durations per measure, overall and per channel and city: name -> (day, hours) by day
    tickets: dict[str, dict[str | None, dict[str, tuple[np.ndarray, np.ndarray]]]]


_LOADED_ORDERS: dict[Path, tuple[str, _CustomerOrders]] = {}


def _loaded_customer_orders(folder: Path, meta: CubeMeta, con: duckdb.DuckDBPyConnection) -> _CustomerOrders:
    key = folder.resolve()
    with _LOADING:
        loaded = _LOADED_ORDERS.get(key)
        if loaded is not None and loaded[0] == meta.lake_stamp:
            return loaded[1]
        with closing(con.cursor()) as cur:
            channels = tuple(
                row[0] for row in cur.execute("SELECT DISTINCT channel FROM customer_orders ORDER BY 1").fetchall()
            )
            cities = tuple(
                row[0] for row in cur.execute("SELECT DISTINCT city FROM customer_orders ORDER BY 1").fetchall()
            )
            epoch = "DATE '1970-01-01'"
            arrays = cur.execute(
                f"""SELECT CAST(day - {epoch} AS INTEGER) AS day,
                           CAST(coalesce(prev_day - {epoch}, {_NO_DAY}) AS INTEGER) AS prev_day,
                           CAST(coalesce(prev2_day - {epoch}, {_NO_DAY}) AS INTEGER) AS prev2_day,
                           CAST(list_position($channels, channel) - 1 AS INTEGER) AS channel,
                           CAST(list_position($cities, city) - 1 AS INTEGER) AS city
                    FROM customer_orders ORDER BY day""",
                {"channels": list(channels), "cities": list(cities)},
            ).fetchnumpy()
        day = np.ascontiguousarray(arrays["day"], dtype=np.int32)
        prev_day = np.ascontiguousarray(arrays["prev_day"], dtype=np.int32)
        prev2_day = np.ascontiguousarray(arrays["prev2_day"], dtype=np.int32)

        def split(codes: np.ndarray, names: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
            order = np.argsort(codes, kind="stable")  # by code, still by day within a code
            bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
            return {
                name: (day[order[a:b]], prev_day[order[a:b]], prev2_day[order[a:b]])
                for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)
            }

        tickets: dict[str, dict[str | None, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
        with closing(con.cursor()) as cur:
            rows = cur.execute(
                f"""SELECT measure, channel, city, CAST(day - {epoch} AS INTEGER) AS day, hours
                    FROM ticket_durations ORDER BY measure, day"""
            ).fetchnumpy()
        t_measure = np.asarray(rows["measure"], dtype=object)
        t_channel = np.asarray(rows["channel"], dtype=object)
        t_city = np.asarray(rows["city"], dtype=object)
        t_day = np.ascontiguousarray(rows["day"], dtype=np.int32)
        t_hours = np.ascontiguousarray(rows["hours"], dtype=np.float64)
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
        orders = _CustomerOrders(
            tickets=tickets,
            day=day,
            prev_day=prev_day,
            prev2_day=prev2_day,
            by_channel=split(np.asarray(arrays["channel"], dtype=np.int32), channels),
            by_city=split(np.asarray(arrays["city"], dtype=np.int32), cities),
        )
        _LOADED_ORDERS[key] = (meta.lake_stamp, orders)
        return orders


def _epoch_day(value: date) -> np.int32:
    # an int32 key: numpy would copy the whole int32 array to compare it with a Python int
    return np.int32((value - date(1970, 1, 1)).days)


def _customer_counts(
    orders: _CustomerOrders, periods: _Periods, start: date, end: date, by: str | None
) -> list[tuple[str, int, int, int]]:
    """Active, new and repeat customers per group, exactly as the SQL over customer_orders counts
    them: a row counts as active when its previous order is before its group's first day, new when
    there is none, repeat when the previous is in the group but the one before is not."""
    out: list[tuple[str, int, int, int]] = []

    def counts(prev: np.ndarray, prev2: np.ndarray, first: np.int32) -> tuple[int, int, int]:
        before = prev < first
        active = int(np.count_nonzero(before))
        new = int(np.count_nonzero(prev == _NO_DAY))
        repeat = int(np.count_nonzero(~before & (prev2 < first)))
        return active, new, repeat

    def within(day: np.ndarray, first: date, last: date) -> slice:
        a = int(np.searchsorted(day, _epoch_day(first), "left"))
        return slice(a, a + int(np.searchsorted(day[a:], _epoch_day(last), "right")))

    if by in ("channel", "city"):
        split = orders.by_channel if by == "channel" else orders.by_city
        for name, (day, prev, prev2) in split.items():
            rows = within(day, start, end)
            if rows.start < rows.stop:
                out.append((name, *counts(prev[rows], prev2[rows], _epoch_day(start))))
        return out
    # month and week groups are runs of days from their (clipped) first day; ungrouped is one run
    spans = periods.spans if by in ("month", "week") else {ALL: (start, end)}
    for label, (first, last) in spans.items():
        rows = within(orders.day, first, last)
        if rows.start < rows.stop:
            out.append((label, *counts(orders.prev_day[rows], orders.prev2_day[rows], _epoch_day(first))))
    return out


def _ticket_durations(
    con: duckdb.DuckDBPyConnection, orders: _CustomerOrders, periods: _Periods, start: date, end: date,
    by: str | None,
) -> list[tuple[str, str, int, float, float]]:  # fmt: skip
    """(group, measure, count, sum of hours, median hours) like the SQL over ticket_durations. The
    median's middle one or two values are picked here and DuckDB's median of just those gives
    exactly the median DuckDB computes over the whole group."""
    found: list[tuple[str, str, int, float]] = []
    middles: list[tuple[int, float]] = []
    for measure, splits in orders.tickets.items():
        if by in ("channel", "city"):
            runs = [(name, day, hours, start, end) for name, (day, hours) in splits[by].items()]
        else:
            day, hours = splits[None][ALL]
            spans = periods.spans if by in ("month", "week") else {ALL: (start, end)}
            runs = [(label, day, hours, first, last) for label, (first, last) in spans.items()]
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


def _lake_tables(
    con: duckdb.DuckDBPyConnection, settings: Settings, present: Sequence[str], dims_sql: str = CUSTOMER_DIMS_SQL
) -> tuple[dict[str, str], date, date]:
    """The lake's tables as SQL sources (plus the per-customer dimensions) and its first and last
    order day; both the cube build and the direct scan start here."""
    tables = _table_sources(settings, present)
    con.execute(f"CREATE TEMP TABLE customer_dims AS {dims_sql.format(**tables)}")
    tables["customer_dims"] = "customer_dims"
    span = con.execute(
        f"SELECT min(CAST(ordered_at AS DATE)), max(CAST(ordered_at AS DATE)) FROM {tables['orders']}"
    ).fetchone()
    if span is None or span[0] is None:
        raise CustlensError(
            f"the lake {settings.lake_dir} has no orders; the KPI cube needs at least one order. "
            "Check the orders export and run `custlens ingest` again"
        )
    return tables, span[0], span[1]


def kpis_direct(settings: Settings, start: date, end: date, by: Grouping | None = None) -> KpiTable:
    """The same table as `kpis()`, computed by scanning the lake itself (slow; the tests' oracle)."""
    _check_arguments(start, end, by)
    present = _present_tables(settings)
    dims_sql = CUSTOMER_DIMS_SQL
    if by in SEGMENT_GROUPINGS:
        _read_meta(settings, segment_dir(settings) / by)  # the scores exist and fit this lake
        dims_sql = _segment_dims_sql(by, segment_dir(settings) / "assignments.parquet")
    with closing(_connect(settings)) as con:
        tables, first_day, last_day = _lake_tables(con, settings, present, dims_sql)
        meta = CubeMeta(
            tables=("customers", "orders", *present),
            first_day=first_day,
            last_day=last_day,
            activity_days=settings.training.activity_window_days,
            churn_days=settings.training.churn_window_days,
            lake_stamp="",
        )
        predicted = None
        if by not in ("month", "week") and (segment_dir(settings) / "scores.json").is_file():
            predicted = _predicted_clv_query(con, settings, segment_dir(settings)).get(by)
        table = _answer(con, meta, tables, start, end, _dimension(by), cube=False, predicted=predicted)
    return _as_grouped_by(table, by)


def last_full_month(settings: Settings) -> tuple[date, date]:
    """The last calendar month wholly covered by the lake's orders: the default KPI period."""
    from features.lake.tables import lake_end

    end = lake_end(settings).date()  # the day after the last order day
    last_day = end - timedelta(days=1)
    if end.day != 1:  # the last month is not complete: take the one before it
        last_day = end.replace(day=1) - timedelta(days=1)
    return last_day.replace(day=1), last_day


def _check_arguments(start: date, end: date, by: str | None) -> None:
    if by is not None and by not in GROUPINGS:
        raise CustlensError(f"unknown grouping {by!r}; group KPIs by one of {', '.join(GROUPINGS)} (or not at all)")
    if start > end:
        raise CustlensError(
            f"the period starts on {start.isoformat()}, after its end {end.isoformat()}; --from must not be after --to"
        )


def _read_meta(settings: Settings, folder: Path | None = None) -> CubeMeta:
    if folder is not None:  # a segment cube, built by `custlens score`
        if not (folder / "meta.json").is_file():
            raise CustlensError(
                f"KPIs by {folder.name} need segments from a batch scoring run; run `custlens score` first"
            )
        meta = CubeMeta.read(folder / "meta.json")
        if meta.lake_stamp.split("|")[0] != _lake_stamp(settings):
            raise CustlensError(
                f"the segments in {folder.parent} were scored on an older lake than {settings.lake_dir}; "
                "run `custlens score` again"
            )
        return meta
    folder = kpi_dir(settings)
    if not (folder / "meta.json").is_file():
        raise CustlensError(
            f"there is no KPI cube in {folder}; run `custlens ingest` (which builds it) or `custlens kpis --rebuild`"
        )
    meta = CubeMeta.read(folder / "meta.json")
    if meta.lake_stamp != _lake_stamp(settings):
        raise CustlensError(
            f"the KPI cube in {folder} was built from an older lake than {settings.lake_dir}; "
            "rebuild it with `custlens kpis --rebuild`"
        )
    return meta


# ---------------------------------------------------------------- computing one answer


@dataclass(frozen=True)
class _Periods:
    """The groups of one question and, per group, the first and last day it covers."""

    labels: tuple[str, ...]
    spans: dict[str, tuple[date, date]]
    label_sql: str  # SQL of a row's group label from its `day`, `channel`, `city`
    start_sql: str  # SQL of the first day of a row's group


def _periods(start: date, end: date, by: str | None) -> _Periods:
    whole = (start, end)
    start_literal = _date_literal(start)
    if by in ("month", "week"):
        spans: dict[str, tuple[date, date]] = {}
        day = start
        while day <= end:
            if by == "month":
                label = day.strftime("%Y-%m")
                next_day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            else:
                monday = day - timedelta(days=day.weekday())
                label = monday.isoformat()
                next_day = monday + timedelta(days=7)
            spans[label] = (day, min(end, next_day - timedelta(days=1)))
            day = next_day
        label_sql = "strftime(day, '%Y-%m')" if by == "month" else "strftime(date_trunc('week', day), '%Y-%m-%d')"
        start_sql = f"greatest(CAST(date_trunc('{by}', day) AS DATE), {start_literal})"
        return _Periods(tuple(spans), spans, label_sql, start_sql)
    if by in ("channel", "city"):
        return _Periods((), {}, f"coalesce({by}, '{NONE_LABEL}')", start_literal)
    return _Periods((ALL,), {ALL: whole}, f"'{ALL}'", start_literal)


def _answer(
    con: duckdb.DuckDBPyConnection,
    meta: CubeMeta,
    tables: dict[str, str],
    start: date,
    end: date,
    by: str | None,
    cube: bool,
    orders: _CustomerOrders | None = None,
    predicted: dict[str, tuple[float, float]] | None = None,
) -> KpiTable:
    periods = _periods(start, end, by)
    parts: dict[str, dict[str, float]] = {}
    medians: dict[str, dict[str, float]] = {}
    within = f"day BETWEEN {_date_literal(start)} AND {_date_literal(end)}"

    def add(rows: Iterable[Sequence[object]], names: Sequence[str], into: dict[str, dict[str, float]]) -> None:
        for row in rows:
            values = into.setdefault(str(row[0]), {})
            for name, value in zip(names, row[1:], strict=True):
                values[name] = values.get(name, 0.0) + (float(value) if value is not None else 0.0)  # type: ignore[arg-type]

    # additive facts: one scan of the cube, or one scan of the lake per source
    sources = [source for source in FACT_ROWS if FACT_TABLE.get(source, source) in meta.tables]
    if cube:
        columns = [column for source in sources for column in FACT_ROWS[source][1]]
        sums = ", ".join(f"sum({column})" for column in columns)
        query = f"SELECT {periods.label_sql} AS grp, {sums} FROM {tables['daily']} WHERE {within} GROUP BY grp"
        add(con.execute(query).fetchall(), columns, parts)
    else:
        for source in sources:
            rows_sql, source_columns = FACT_ROWS[source]
            sums = ", ".join(f"sum({column})" for column in source_columns)
            query = (
                f"SELECT {periods.label_sql} AS grp, {sums} FROM ({_fill(rows_sql, tables)}) "
                f"WHERE {within} GROUP BY grp"
            )
            add(con.execute(query).fetchall(), source_columns, parts)

    # ticket durations: means and exact medians
    if "tickets" in meta.tables and cube and orders is not None:
        for group, measure, count, total, median in _ticket_durations(con, orders, periods, start, end, by):
            values = parts.setdefault(group, {})
            values[f"{measure}_count"] = float(count)
            values[f"{measure}_sum"] = total
            medians.setdefault(group, {})[measure] = median
    elif "tickets" in meta.tables:
        durations = tables["ticket_durations"] if cube else f"({_fill(TICKET_DURATION_ROWS_SQL, tables)})"
        query = (
            f"SELECT {periods.label_sql} AS grp, measure, count(*), sum(hours), median(hours) "
            f"FROM {durations} WHERE {within} GROUP BY ALL"
        )
        for group, measure, count, total, median in con.execute(query).fetchall():
            values = parts.setdefault(str(group), {})
            values[f"{measure}_count"] = float(count)
            values[f"{measure}_sum"] = float(total)
            medians.setdefault(str(group), {})[measure] = float(median)

    # distinct customers: active, new, repeat
    # customer rows carry the customer's acquisition channel, so by channel they group by it
    customer_periods = periods
    if cube and orders is not None:
        counted = _customer_counts(orders, periods, start, end, by)
        add(counted, ("active_customers", "new_customers", "repeat_customers"), parts)
    elif cube:
        query = f"""
            SELECT {customer_periods.label_sql} AS grp,
                   count(*) FILTER (WHERE prev_day IS NULL OR prev_day < {customer_periods.start_sql}),
                   count(*) FILTER (WHERE prev_day IS NULL),
                   count(*) FILTER (WHERE prev_day >= {customer_periods.start_sql}
                                      AND (prev2_day IS NULL OR prev2_day < {customer_periods.start_sql}))
            FROM {tables["customer_orders"]} WHERE {within} GROUP BY grp
        """
    else:
        query = f"""
            WITH completed AS (
                SELECT orders.customer_id, CAST(orders.ordered_at AS DATE) AS day,
                       customer_dims.acquisition_channel AS channel, customer_dims.city
                FROM {tables["orders"]} AS orders LEFT JOIN customer_dims USING (customer_id)
                WHERE orders.status = 'completed'
            ),
            first_orders AS (SELECT customer_id, min(day) AS first_day FROM completed GROUP BY customer_id),
            per_customer AS (
                SELECT {customer_periods.label_sql} AS grp, customer_id, count(*) AS orders_in_group,
                       min({customer_periods.start_sql}) AS group_start
                FROM completed WHERE {within} GROUP BY ALL
            )
            SELECT grp, count(*), count(*) FILTER (WHERE first_day >= group_start),
                   count(*) FILTER (WHERE orders_in_group >= 2)
            FROM per_customer JOIN first_orders USING (customer_id) GROUP BY grp
        """
    if not (cube and orders is not None):
        add(con.execute(query).fetchall(), ("active_customers", "new_customers", "repeat_customers"), parts)

    # labels: every period of a month or week grouping; every channel or city that has data
    labels = periods.labels or tuple(sorted(parts))
    if not labels:
        labels = ()
    spans = periods.spans or {label: (start, end) for label in labels}

    # the churn cohort at each group's first day, and historic CLV at each group's last day
    complete = {label for label in labels if spans[label][0] + timedelta(days=meta.churn_days - 1) <= meta.last_day}
    if cube:
        _cohorts_from_cube(con, tables, periods, labels, spans, complete, by, end, parts)
    else:
        group_of = _group_sql(by)
        for label in labels:
            first, last = spans[label]
            values = parts.setdefault(label, {})
            if label in complete:
                values.update(_churn_cohort(con, tables, meta, first, label, group_of))
            values.update(_clv(con, tables, last, label, group_of))

    # predicted value: from the latest batch scores, per customer group (not per period)
    for label, (total, customers) in (predicted or {}).items():
        if label in spans:
            parts.setdefault(label, {}).update(predicted_clv_total=total, scored_customers=customers)

    values_out: list[KpiValue] = []
    for label in labels:
        span = spans[label]
        values_out.extend(_finish(parts.get(label, {}), medians.get(label, {}), label, span, by, meta))
    return KpiTable(start=start, end=end, by=by, groups=labels, values=tuple(values_out))


def _group_sql(by: str | None) -> str:
    if by in ("channel", "city"):
        return f" AND {by} = ?"
    return ""


def _cohorts_from_cube(
    con: duckdb.DuckDBPyConnection, tables: dict[str, str], periods: _Periods, labels: Sequence[str],
    spans: dict[str, tuple[date, date]], complete: set[str], by: str | None, end: date,
    parts: dict[str, dict[str, float]],
) -> None:  # fmt: skip
    """Churn cohorts and historic CLV of every group from the customer cube, in two queries."""
    starts = sorted({spans[label][0] for label in complete})
    if starts:
        days = ", ".join(_date_literal(day) for day in starts)
        query = (
            f"SELECT {periods.label_sql} AS grp, day, sum(churn_base), sum(churn_retained) "
            f"FROM {tables['customer_daily']} WHERE day IN ({days}) GROUP BY ALL"
        )
        for label, day, base, retained in con.execute(query).fetchall():
            if label in complete and spans[label][0] == day:
                values = parts.setdefault(label, {})
                values["churn_base"] = values.get("churn_base", 0.0) + float(base)
                values["churn_retained"] = values.get("churn_retained", 0.0) + float(retained)
        for label in complete:
            values = parts.setdefault(label, {})
            values.setdefault("churn_base", 0.0)
            values.setdefault("churn_retained", 0.0)
            values["churned_customers"] = values["churn_base"] - values["churn_retained"]
    if by in ("channel", "city"):
        query = (
            f"SELECT {by}, sum(revenue), sum(new_customers) FROM {tables['customer_daily']} "
            f"WHERE day <= {_date_literal(end)} GROUP BY ALL"
        )
        for label, revenue, customers in con.execute(query).fetchall():
            if label in spans:
                parts.setdefault(label, {}).update(clv_revenue=float(revenue), clv_customers=float(customers))
        for label in labels:
            parts.setdefault(label, {}).setdefault("clv_revenue", 0.0)
            parts[label].setdefault("clv_customers", 0.0)
        return
    # over time: running totals per day, read at each group's last day
    query = (
        f"SELECT day, sum(sum(revenue)) OVER by_day, sum(sum(new_customers)) OVER by_day "
        f"FROM {tables['customer_daily']} WHERE day <= {_date_literal(end)} GROUP BY day "
        "WINDOW by_day AS (ORDER BY day) ORDER BY day"
    )
    running = con.execute(query).fetchall()
    running_days = [row[0] for row in running]
    for label in labels:
        at = bisect_right(running_days, spans[label][1]) - 1
        revenue, customers = (float(running[at][1]), float(running[at][2])) if at >= 0 else (0.0, 0.0)
        parts.setdefault(label, {}).update(clv_revenue=revenue, clv_customers=customers)


def _churn_cohort(
    con: duckdb.DuckDBPyConnection, tables: dict[str, str], meta: CubeMeta, first: date, label: str, group_of: str
) -> dict[str, float]:
    """The lake's churn cohort at `first`: customers who bought in the activity window before it, and
    those of them who bought again within the churn window from it."""
    since = _date_literal(first - timedelta(days=meta.activity_days))
    until = _date_literal(first + timedelta(days=meta.churn_days))
    query = f"""
        WITH completed AS (
            SELECT orders.customer_id, CAST(orders.ordered_at AS DATE) AS day,
                   customer_dims.acquisition_channel AS channel, customer_dims.city
            FROM {tables["orders"]} AS orders LEFT JOIN customer_dims USING (customer_id)
            WHERE orders.status = 'completed'
        ),
        base AS (
            SELECT DISTINCT customer_id FROM completed
            WHERE day >= {since} AND day < {_date_literal(first)}{group_of}
        ),
        came_back AS (
            SELECT DISTINCT customer_id FROM completed WHERE day >= {_date_literal(first)} AND day < {until}
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
    """The lake's lifetime revenue and buyers by `last`."""
    query = f"""
        SELECT sum(CAST(orders.net_amount AS DOUBLE)), count(DISTINCT orders.customer_id)
        FROM {tables["orders"]} AS orders LEFT JOIN customer_dims USING (customer_id)
        WHERE orders.status = 'completed' AND CAST(orders.ordered_at AS DATE) <= {_date_literal(last)}
        {group_of.replace("channel", "acquisition_channel")}
    """
    row = con.execute(query, [label] if group_of else []).fetchone()
    assert row is not None
    return {"clv_revenue": float(row[0] or 0), "clv_customers": float(row[1] or 0)}


def _finish(
    parts: dict[str, float], medians: dict[str, float], label: str, span: tuple[date, date], by: str | None,
    meta: CubeMeta,
) -> list[KpiValue]:  # fmt: skip
    """Divide the summed parts of one group into its KPIs, or say why a KPI has no value."""
    parts = dict(parts)
    parts["nps_net"] = parts.get("nps_promoters", 0.0) - parts.get("nps_detractors", 0.0)
    parts["returning_customers"] = parts.get("active_customers", 0.0) - parts.get("new_customers", 0.0)
    out: dict[str, KpiValue] = {}
    for definition in KPIS:
        name = definition.name
        if definition.table not in meta.tables:
            out[name] = KpiValue(label, name, None, missing=f"no {definition.table} export in the lake")
            continue
        if name in ("cac", "ltv_to_cac") and by == "city":
            out[name] = KpiValue(label, name, None, missing="marketing spend is not split by city")
            continue
        if name == "predicted_clv" and by in ("month", "week"):
            out[name] = KpiValue(label, name, None, missing=f"a prediction from the latest scores is not split by {by}")
            continue
        if name in ("churn_rate", "retention_rate") and "churn_base" not in parts:
            window_end = span[0] + timedelta(days=meta.churn_days - 1)
            out[name] = KpiValue(
                label, name, None,
                missing=f"the {meta.churn_days}-day churn window from {span[0].isoformat()} ends "
                f"{window_end.isoformat()}, after the last order day {meta.last_day.isoformat()}",
            )  # fmt: skip
            continue
        if name == "ltv_to_cac":
            clv, cac = out["historic_clv"], out["cac"]
            if clv.value is None or cac.value is None or cac.value == 0:
                reason = clv.missing or cac.missing or "CAC is 0 (spend without cost)"
                out[name] = KpiValue(label, name, None, clv.value, cac.value, missing=f"LTV:CAC undefined: {reason}")
            else:
                out[name] = KpiValue(label, name, clv.value / cac.value, clv.value, cac.value)
            continue
        numerator = parts.get(definition.numerator, 0.0) if definition.numerator else None
        if definition.denominator is None:
            out[name] = KpiValue(label, name, numerator, numerator)
            continue
        denominator = parts.get(definition.denominator, 0.0)
        if denominator == 0:
            reason = definition.empty
            if name in ("churn_rate", "retention_rate"):
                reason = f"no customers bought in the {meta.activity_days} days before {span[0].isoformat()}"
            elif name == "historic_clv":
                reason = f"no customer had bought by {span[1].isoformat()}"
            out[name] = KpiValue(label, name, None, numerator, denominator, missing=reason)
            continue
        if definition.numerator is None:  # a median: the count is its denominator
            value = medians.get(name.split("_")[0], 0.0)
            out[name] = KpiValue(label, name, value, None, denominator)
            continue
        assert numerator is not None
        out[name] = KpiValue(label, name, definition.scale * numerator / denominator, numerator, denominator)
    return [out[definition.name] for definition in KPIS]


# ---------------------------------------------------------------- small helpers


def _shown(value: KpiValue, definition: KpiDefinition) -> str:
    if value.value is None:
        return "[dim]missing[/]"
    if definition.unit == "share":
        return f"{value.value:.1%}"
    if definition.unit == "count":
        return f"{value.value:,.0f}"
    if definition.unit == "money":
        return f"{value.value:,.0f}"
    if definition.unit == "score":
        return f"{value.value:+.1f} (n={value.denominator:,.0f})"
    return f"{value.value:,.2f}"


def _present_tables(settings: Settings) -> tuple[str, ...]:
    for table in ("customers", "orders"):
        if not (settings.lake_dir / f"{table}.parquet").exists():
            raise CustlensError(
                f"the lake {settings.lake_dir} has no {table}.parquet; run `custlens ingest` first "
                "(or point CUSTLENS_DATA_DIR at the data folder that holds the lake)"
            )
    return tuple(table for table in OPTIONAL_TABLES if (settings.lake_dir / f"{table}.parquet").exists())


def _table_sources(settings: Settings, present: Sequence[str]) -> dict[str, str]:
    return {
        table: f"read_parquet({_literal(settings.lake_dir / f'{table}.parquet')})"
        for table in ("customers", "orders", *present)
    }


def _fill(rows_sql: str, tables: dict[str, str]) -> str:
    return rows_sql.format(grace_seconds=SESSION_GRACE_SECONDS, default_seconds=SESSION_DEFAULT_SECONDS, **tables)


def _lake_stamp(settings: Settings) -> str:
    """Which lake a cube was built from: ingest swaps the whole lake folder, so its files' times tell."""
    stamps = []
    for path in sorted(settings.lake_dir.glob("*.parquet")):
        stamps.append(f"{path.name}:{path.stat().st_mtime_ns}:{path.stat().st_size}")
    return ";".join(stamps)


def _connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{settings.features.duckdb_memory_limit}'")
    con.execute(f"SET threads = {settings.features.duckdb_threads}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def _copy(con: duckdb.DuckDBPyConnection, query: str, target: Path) -> None:
    con.execute(f"COPY ({query}) TO {_literal(target)} (FORMAT parquet, COMPRESSION zstd)")


def _date_literal(value: date) -> str:
    return f"DATE '{value.isoformat()}'"


def _literal(value: Path | str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


__all__ = [
    "GROUPINGS",
    "KPIS",
    "KPI_NAMES",
    "KpiTable",
    "KpiValue",
    "build_kpi_cube",
    "build_segment_cubes",
    "kpi_dir",
    "kpis",
    "kpis_direct",
    "last_full_month",
    "segment_as_of",
]
