"""The SQL the cube build and the direct scan share: one row-level query per source of additive
facts, the ticket durations, the customers' dimensions, and the per-order customer rows and daily
cohorts of the cube; and how those texts are bound to one lake's tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import duckdb

from custlens.settings import Settings
from features.kpis.arguments import SEGMENT_GROUPINGS
from features.kpis.definitions import GUESTS, UNSCORED
from features.kpis.source import order_day_span, order_tables
from features.lake.tables import net_revenue_sql, read_table_sql, sql_literal, table_path

SESSION_GRACE_SECONDS = 300  # an order confirmed shortly after the session's last recorded second
SESSION_DEFAULT_SECONDS = 1800  # a session with no duration lasts the web-analytics default, 30 min

# ---------------------------------------------------------------- row-level facts, one query per source
#
# Each query yields one row per fact with day (the business's local day: the connection's TimeZone),
# channel, city (the customer's) and its additive parts as columns. The cube sums them per (day,
# channel, city); the direct scan sums them per group over the period. {orders} etc. read a lake
# table ({guest_orders} an empty one when there are none); {customer_dims} is customer_id -> city, channel.

ORDER_ROWS_SQL = """
-- customers' orders and guest orders (no customer: their own `(guests)` line where rows group by
-- a customer's city or segment); revenue is net revenue, completed orders minus refunds
WITH order_rows AS (
    SELECT orders.ordered_at, orders.channel, orders.status, orders.net_amount, customer_dims.city
    FROM {orders} AS orders
    LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
    UNION ALL BY NAME
    SELECT ordered_at, channel, status, net_amount, '{guests}' AS city
    FROM {guest_orders}
)
SELECT CAST(ordered_at AS DATE) AS day,
       coalesce(channel, '(none)') AS channel,
       city,
       CAST(status = 'completed' AS BIGINT) AS orders,
       CAST({net_revenue} AS DOUBLE) AS revenue,
       CAST(status = 'returned' AS BIGINT) AS returned_orders,
       -- a returned order was a purchase first; a cancelled one never was
       CAST(status IN ('completed', 'returned') AS BIGINT) AS purchased_orders
FROM order_rows
""".replace("{net_revenue}", net_revenue_sql()).replace("{guests}", GUESTS)

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


def fact_sources(tables: Sequence[str]) -> list[str]:
    """The row queries of FACT_ROWS whose lake table is among `tables`."""
    return [source for source in FACT_ROWS if FACT_TABLE.get(source, source) in tables]


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
           customer_dims.acquisition_channel AS channel, customer_dims.city
    FROM {orders} AS orders
    LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
    WHERE orders.status = 'completed'
)
SELECT day,
       lag(day) OVER by_customer AS prev_day,
       lag(day, 2) OVER by_customer AS prev2_day,
       lead(day) OVER by_customer AS next_day,
       coalesce(channel, '(none)') AS channel,
       coalesce(city, '(none)') AS city
FROM completed
WINDOW by_customer AS (PARTITION BY customer_id ORDER BY ordered_at, order_id)
"""

CUSTOMER_REVENUE_SQL = """
-- the customers' net revenue (completed orders minus refunds) per (day, acquisition channel, city):
-- historic CLV's numerator; a refund is a row of its own, never an order
SELECT CAST(orders.ordered_at AS DATE) AS day,
       coalesce(customer_dims.acquisition_channel, '(none)') AS channel,
       coalesce(customer_dims.city, '(none)') AS city,
       sum(CAST({net_revenue} AS DOUBLE)) AS revenue
FROM {orders} AS orders
LEFT JOIN {customer_dims} AS customer_dims USING (customer_id)
WHERE orders.status IN ('completed', 'returned')
GROUP BY ALL
""".replace("{net_revenue}", net_revenue_sql("orders"))

CUSTOMER_DAILY_SQL = """
-- per (day s, acquisition channel, city): first orders, net revenue, and the churn cohort of s: customers
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
    SELECT day, channel, city, count(*) FILTER (WHERE prev_day IS NULL) AS new_customers
    FROM customer_orders
    GROUP BY ALL
),
calendar AS (
    SELECT CAST(range AS DATE) AS day
    FROM range(CAST({first_day} AS TIMESTAMP), CAST({last_day} AS TIMESTAMP) + INTERVAL 1 DAY, INTERVAL 1 DAY)
),
dense AS (
    SELECT calendar.day, groups.channel, groups.city
    FROM calendar CROSS JOIN (
        SELECT channel, city FROM customer_orders UNION SELECT channel, city FROM customer_revenue
    ) AS groups
),
cohorts AS (
    SELECT dense.day, dense.channel, dense.city,
           coalesce(daily_orders.new_customers, 0) AS new_customers,
           coalesce(customer_revenue.revenue, 0) AS revenue,
           sum(coalesce(daily_changes.base_change, 0)) OVER running AS churn_base,
           sum(coalesce(daily_changes.retained_change, 0)) OVER running AS churn_retained
    FROM dense
    LEFT JOIN daily_orders USING (day, channel, city)
    LEFT JOIN customer_revenue USING (day, channel, city)
    LEFT JOIN daily_changes USING (day, channel, city)
    WINDOW running AS (PARTITION BY dense.channel, dense.city ORDER BY dense.day ROWS UNBOUNDED PRECEDING)
)
SELECT * FROM cohorts
WHERE new_customers <> 0 OR revenue <> 0 OR churn_base <> 0 OR churn_retained <> 0
ORDER BY day
"""


# ---------------------------------------------------------------- binding the texts to a lake


def lake_sources(
    con: duckdb.DuckDBPyConnection, settings: Settings, present: Sequence[str], dims_sql: str = CUSTOMER_DIMS_SQL
) -> tuple[dict[str, str], date, date]:
    """The lake's tables as SQL sources (plus the per-customer dimensions and the guest orders) and
    its first and last local order day; both the cube build and the direct scan start here."""
    tables = {table: read_table_sql(table_path(settings, table)) for table in ("customers", *present)}
    tables.update(order_tables(settings))
    con.execute(f"CREATE TEMP TABLE customer_dims AS {dims_sql.format(**tables)}")
    tables["customer_dims"] = "customer_dims"
    first_day, last_day = order_day_span(con, settings, tables)
    return tables, first_day, last_day


def segment_dims_sql(grouping: str, assignments: Path) -> str:
    """SEGMENT_DIMS_SQL for one segment grouping over one run's assignments file."""
    return (SEGMENT_DIMS_SQL.replace("{segment_column}", SEGMENT_GROUPINGS[grouping])
            .replace("{unscored}", UNSCORED).replace("{assignments}", sql_literal(assignments)))  # fmt: skip


def fill(rows_sql: str, tables: dict[str, str]) -> str:
    """A row query bound to its lake sources (from `lake_sources`) and the session constants."""
    return rows_sql.format(grace_seconds=SESSION_GRACE_SECONDS, default_seconds=SESSION_DEFAULT_SECONDS, **tables)
