"""`custlens features build`: per-customer feature snapshots at cutoff dates, computed set-wise in
DuckDB from the lake, one Parquet file per family and cutoff: features/<family>/<YYYY-MM-DD>.parquet.

A cutoff D is the instant D 00:00 UTC; a snapshot uses only rows stamped strictly before it, and
"the last N days" is [D - N days, D). The SQL is plain enough to run on Spark as it is.

Revenue is net revenue (features.lake.tables.net_revenue_sql): completed orders minus refunds. A
refund (a `returned` row with a negative amount, a credit note) lowers revenue in the window it is
dated in, and is never an order: counts, first/last order and gaps are completed orders only. The
BTYD summary (purchase days and the value of the repeat ones) nets each refund into the purchase day
it most likely refunds instead, exactly as training.baselines.btyd.rfm_summary does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from custlens.errors import CustlensError
from custlens.progress import progress_bar
from custlens.settings import Settings
from features import layout
from features.asof import AsOf, after_data_end, live_as_of
from features.btyd import FEATURE_NAMES, SUMMARY_COLUMNS, BtydFit, family_at, window_days
from features.catalog import FAMILIES, FAMILY_SOURCE_TABLE, Family, FeatureKind, family_features
from features.lake.tables import (
    copy_to_parquet,
    duckdb_connect,
    missing_table,
    net_revenue_sql,
    sql_literal,
    table_path,
)

# How each kind of feature is stored; Parquet gets exactly these (timestamps in microseconds, UTC).
SQL_TYPES: dict[FeatureKind, str] = {
    "count": "BIGINT",
    "number": "DOUBLE",
    "timestamp": "TIMESTAMPTZ",
    "category": "VARCHAR",
}
REQUIRED_TABLES = ("customers", "orders", "crosswalk")
DAY_WINDOWS = (30, 90, 180, 365)

# ---------------------------------------------------------------- the feature SQL, one query per family
#
# Placeholders: {<table>} reads a lake table; {cutoff} is the cutoff instant and {since_<N>d} the
# instant N days before it (on Spark: parquet.`path`, TIMESTAMP literals; arg_max is max_by, epoch_us
# is unix_micros, and the ASOF JOIN is last(purchase_day, true) over the refunds and purchase days in
# day order). A UTC day number is epoch_us(t) // 86400000000. Each query ends with one row per
# customer of `population`, whose columns are the family's features, named as in the catalog; the
# caller casts and orders them.

POPULATION_SQL = """
WITH ordered_before AS (
    SELECT DISTINCT customer_id
    FROM {orders}
    WHERE ordered_at < {cutoff} AND status IN ('completed', 'returned', 'cancelled')
      AND NOT (status = 'returned' AND net_amount < 0)  -- a refund is not an order
)
-- whoever had signed up, or had already ordered, by the cutoff
SELECT customers.customer_id
FROM {customers} AS customers
LEFT JOIN ordered_before USING (customer_id)
WHERE customers.signup_at < {cutoff} OR ordered_before.customer_id IS NOT NULL
"""

PURCHASES_SQL = """
WITH orders_before AS (
    SELECT customer_id, ordered_at, status, channel, category, net_amount,
           -- a discount share needs both amounts; an order missing one says nothing about it
           CASE WHEN gross_amount IS NOT NULL AND discount_amount IS NOT NULL THEN gross_amount END AS gross_amount,
           CASE WHEN gross_amount IS NOT NULL AND discount_amount IS NOT NULL THEN discount_amount END
               AS discount_amount,
           {net_revenue} AS net_revenue,
           status = 'completed' AS is_completed,
           status = 'returned' AND net_amount < 0 AS is_refund,
           ordered_at >= {since_365d} AS in_365d,
           epoch_us(ordered_at) // 86400000000 AS order_day  -- the UTC calendar day, as a day number
    FROM {orders}
    WHERE ordered_at < {cutoff}
),
in_order AS (
    -- each completed order with the customer's previous and first completed ones
    SELECT *,
           lag(ordered_at) OVER completed AS previous_order_at,
           first_value(ordered_at) OVER completed AS first_completed_at
    FROM orders_before
    WINDOW completed AS (PARTITION BY customer_id, is_completed ORDER BY ordered_at)
),
with_gaps AS (
    -- on completed orders: days since the previous one, and whether it is the first of its purchase
    -- day (BTYD's: a UTC calendar day with a completed order) or on the customer's first
    SELECT *,
           CASE WHEN is_completed THEN (epoch_us(ordered_at) - epoch_us(previous_order_at)) / 86400e6 END AS gap_days,
           is_completed AND order_day IS DISTINCT FROM epoch_us(previous_order_at) // 86400000000 AS opens_purchase_day,
           is_completed AND order_day = epoch_us(first_completed_at) // 86400000000 AS on_first_purchase_day
    FROM in_order
),
per_customer AS (
    SELECT customer_id,
           min(ordered_at) FILTER (WHERE is_completed) AS first_order_at,
           max(ordered_at) FILTER (WHERE is_completed) AS last_order_at,
           count(*) FILTER (WHERE is_completed AND ordered_at >= {since_30d}) AS orders_30d,
           count(*) FILTER (WHERE is_completed AND ordered_at >= {since_90d}) AS orders_90d,
           count(*) FILTER (WHERE is_completed AND ordered_at >= {since_180d} AND ordered_at < {since_90d})
               AS orders_previous_90d,
           count(*) FILTER (WHERE is_completed AND in_365d) AS orders_365d,
           count(*) FILTER (WHERE is_completed) AS orders_lifetime,
           count(DISTINCT category) FILTER (WHERE is_completed AND in_365d) AS categories_365d,
           count(DISTINCT channel) FILTER (WHERE is_completed AND in_365d) AS channels_365d,
           -- net revenue: completed orders minus the refunds dated in the window
           sum(net_revenue) FILTER (WHERE ordered_at >= {since_30d}) AS revenue_30d,
           sum(net_revenue) FILTER (WHERE ordered_at >= {since_90d}) AS revenue_90d,
           sum(net_revenue) FILTER (WHERE ordered_at >= {since_180d} AND ordered_at < {since_90d})
               AS revenue_previous_90d,
           sum(net_revenue) FILTER (WHERE in_365d) AS revenue_365d,
           sum(net_revenue) AS revenue_lifetime,
           avg(gap_days) AS mean_days_between_orders,
           stddev_samp(gap_days) AS std_days_between_orders,
           count(*) FILTER (WHERE status = 'returned' AND in_365d) AS returned_365d,
           count(*) FILTER (WHERE status IN ('completed', 'returned') AND in_365d) AS completed_or_returned_365d,
           count(*) FILTER (WHERE status = 'cancelled' AND in_365d) AS cancelled_365d,
           count(*) FILTER (WHERE in_365d AND NOT is_refund) AS all_orders_365d,
           sum(discount_amount) FILTER (WHERE is_completed AND in_365d) AS discount_365d,
           sum(gross_amount) FILTER (WHERE is_completed AND in_365d) AS gross_365d,
           count(*) FILTER (WHERE opens_purchase_day) AS purchase_days_lifetime,
           sum(net_amount) FILTER (WHERE is_completed AND NOT on_first_purchase_day) AS repeat_days_purchased
    FROM with_gaps
    GROUP BY customer_id
),
refunds AS (
    -- read from the lake, not from orders_before: a second reader of that would make DuckDB keep all of it
    SELECT customer_id, epoch_us(ordered_at) // 86400000000 AS refund_day, net_amount AS refunded
    FROM {orders}
    WHERE ordered_at < {cutoff} AND status = 'returned' AND net_amount < 0
),
purchase_days_of_refunded_customers AS (
    -- the purchase days (UTC day numbers) and what was bought on each, of the customers with a refund only
    SELECT customer_id, epoch_us(ordered_at) // 86400000000 AS purchase_day, sum(net_amount) AS purchased,
           purchase_day = min(purchase_day) OVER (PARTITION BY customer_id) AS is_first_purchase_day
    FROM {orders}
    WHERE ordered_at < {cutoff} AND status = 'completed' AND customer_id IN (SELECT customer_id FROM refunds)
    GROUP BY customer_id, purchase_day
),
refunded_purchase_days AS (
    -- each refund is netted into the customer's latest purchase day on or before its own day (the
    -- order it most likely gives money back for); one before the first purchase day matches none
    SELECT refunds.customer_id, is_first_purchase_day, purchased, sum(refunded) AS refunded
    FROM refunds
    ASOF JOIN purchase_days_of_refunded_customers AS days
        ON refunds.customer_id = days.customer_id AND refunds.refund_day >= days.purchase_day
    GROUP BY refunds.customer_id, days.purchase_day, is_first_purchase_day, purchased
),
refunds_taken_off_repeat_days AS (
    -- a refund takes no more off a repeat purchase day than was bought on it: a day is worth 0 at least
    SELECT customer_id, sum(greatest(refunded, -purchased)) AS taken_off
    FROM refunded_purchase_days
    WHERE NOT is_first_purchase_day
    GROUP BY customer_id
)
SELECT population.customer_id,
       first_order_at,
       last_order_at,
       to_timestamp(epoch_us(first_order_at) // 86400000000 * 86400) AS first_purchase_day_at,
       to_timestamp(epoch_us(last_order_at) // 86400000000 * 86400) AS last_purchase_day_at,
       coalesce(orders_30d, 0) AS orders_30d,
       coalesce(orders_90d, 0) AS orders_90d,
       coalesce(orders_365d, 0) AS orders_365d,
       coalesce(orders_lifetime, 0) AS orders_lifetime,
       coalesce(categories_365d, 0) AS categories_365d,
       coalesce(channels_365d, 0) AS channels_365d,
       coalesce(purchase_days_lifetime, 0) AS purchase_days_lifetime,
       coalesce(revenue_30d, 0) AS revenue_30d,
       coalesce(revenue_90d, 0) AS revenue_90d,
       coalesce(revenue_365d, 0) AS revenue_365d,
       coalesce(revenue_lifetime, 0) AS revenue_lifetime,
       -- net lifetime revenue per completed order: refunds lower the value, they add no order
       revenue_lifetime / nullif(orders_lifetime, 0) AS avg_order_value,
       mean_days_between_orders,
       std_days_between_orders,
       returned_365d / nullif(completed_or_returned_365d, 0) AS return_rate_365d,
       cancelled_365d / nullif(all_orders_365d, 0) AS cancellation_rate_365d,
       discount_365d / nullif(gross_365d, 0) AS discount_share_365d,
       coalesce(orders_90d, 0) - coalesce(orders_previous_90d, 0) AS orders_trend_90d,
       coalesce(revenue_90d, 0) - coalesce(revenue_previous_90d, 0) AS revenue_trend_90d,
       CAST(epoch_us(last_order_at) // 86400000000 - epoch_us(first_order_at) // 86400000000 AS DOUBLE)
           AS days_first_to_last_purchase_day,
       -- as in the BTYD summary: 0, not NULL, without a repeat day
       coalesce((repeat_days_purchased + coalesce(taken_off, 0)) / nullif(purchase_days_lifetime - 1, 0), 0)
           AS repeat_purchase_day_value
FROM population
LEFT JOIN per_customer USING (customer_id)
LEFT JOIN refunds_taken_off_repeat_days USING (customer_id)
"""

# What the customer did themselves: not what was sent to them, nor an SMS delivery report.
OWN_ACTIONS = (
    "session_start", "page_view", "bounce", "add_to_cart", "checkout_start", "email_open", "email_click",
    "app_open", "social_share", "referral", "review",
)  # fmt: skip

ENGAGEMENT_SQL = """
WITH events_before AS (
    SELECT customer_id, occurred_at, event_type, session_id, page_views,
           occurred_at >= {since_30d} AS in_30d,
           occurred_at >= {since_90d} AS in_90d
    FROM {engagement_events}
    WHERE occurred_at < {cutoff}
),
per_customer AS (
    SELECT customer_id,
           max(occurred_at) FILTER (WHERE event_type IN ({own_actions})) AS last_engagement_at,
           count(*) FILTER (WHERE event_type = 'session_start' AND in_30d) AS sessions_30d,
           count(*) FILTER (WHERE event_type = 'session_start' AND in_90d) AS sessions_90d,
           -- page views: page_view events, plus the page count a session_start carries (how the
           -- web and app exports summarize a session)
           count(*) FILTER (WHERE event_type = 'page_view' AND in_30d)
               + coalesce(sum(page_views) FILTER (WHERE event_type = 'session_start' AND in_30d), 0)
               AS page_views_30d,
           count(*) FILTER (WHERE event_type = 'page_view' AND in_90d)
               + coalesce(sum(page_views) FILTER (WHERE event_type = 'session_start' AND in_90d), 0)
               AS page_views_90d,
           count(*) FILTER (WHERE event_type = 'add_to_cart' AND in_30d) AS add_to_cart_30d,
           count(*) FILTER (WHERE event_type = 'add_to_cart' AND in_90d) AS add_to_cart_90d,
           count(*) FILTER (WHERE event_type = 'email_unsubscribe' AND in_90d) AS email_unsubscribes_90d,
           count(*) FILTER (WHERE event_type = 'email_spam_report' AND in_90d) AS email_spam_reports_90d,
           count(*) FILTER (WHERE event_type = 'app_open' AND in_30d) AS app_opens_30d,
           count(*) FILTER (WHERE event_type = 'app_open' AND in_90d) AS app_opens_90d,
           count(*) FILTER (WHERE event_type = 'social_share' AND in_90d) AS social_shares_90d,
           count(*) FILTER (WHERE event_type = 'referral' AND in_90d) AS referrals_90d,
           count(*) FILTER (WHERE event_type = 'bounce' AND in_90d) AS bounces_90d,
           count(*) FILTER (WHERE event_type = 'email_sent' AND in_30d) AS emails_sent_30d,
           count(*) FILTER (WHERE event_type = 'email_sent' AND in_90d) AS emails_sent_90d,
           count(*) FILTER (WHERE event_type = 'email_open' AND in_30d) AS emails_opened_30d,
           count(*) FILTER (WHERE event_type = 'email_open' AND in_90d) AS emails_opened_90d,
           count(*) FILTER (WHERE event_type = 'email_click' AND in_30d) AS emails_clicked_30d,
           count(*) FILTER (WHERE event_type = 'email_click' AND in_90d) AS emails_clicked_90d,
           count(*) FILTER (WHERE event_type = 'sms_sent' AND in_90d) AS sms_sent_90d,
           count(*) FILTER (WHERE event_type = 'sms_delivered' AND in_90d) AS sms_delivered_90d,
           -- cart abandonment in one pass: sessions with an add-to-cart and no checkout start are
           -- (sessions with either) - (sessions with a checkout start)
           count(DISTINCT session_id) FILTER (WHERE event_type = 'add_to_cart' AND in_90d) AS carted_sessions_90d,
           count(DISTINCT session_id) FILTER (WHERE event_type IN ('add_to_cart', 'checkout_start') AND in_90d)
               - count(DISTINCT session_id) FILTER (WHERE event_type = 'checkout_start' AND in_90d)
               AS abandoned_sessions_90d
    FROM events_before
    GROUP BY customer_id
)
SELECT population.customer_id,
       last_engagement_at,
       coalesce(sessions_30d, 0) AS sessions_30d,
       coalesce(sessions_90d, 0) AS sessions_90d,
       coalesce(page_views_30d, 0) AS page_views_30d,
       coalesce(page_views_90d, 0) AS page_views_90d,
       coalesce(add_to_cart_30d, 0) AS add_to_cart_30d,
       coalesce(add_to_cart_90d, 0) AS add_to_cart_90d,
       coalesce(email_unsubscribes_90d, 0) AS email_unsubscribes_90d,
       coalesce(email_spam_reports_90d, 0) AS email_spam_reports_90d,
       coalesce(app_opens_30d, 0) AS app_opens_30d,
       coalesce(app_opens_90d, 0) AS app_opens_90d,
       coalesce(social_shares_90d, 0) AS social_shares_90d,
       coalesce(referrals_90d, 0) AS referrals_90d,
       bounces_90d / nullif(sessions_90d, 0) AS bounce_rate_90d,
       abandoned_sessions_90d / nullif(carted_sessions_90d, 0) AS cart_abandonment_rate_90d,
       emails_opened_30d / nullif(emails_sent_30d, 0) AS email_open_rate_30d,
       emails_opened_90d / nullif(emails_sent_90d, 0) AS email_open_rate_90d,
       emails_clicked_30d / nullif(emails_sent_30d, 0) AS email_click_rate_30d,
       emails_clicked_90d / nullif(emails_sent_90d, 0) AS email_click_rate_90d,
       sms_delivered_90d / nullif(sms_sent_90d, 0) AS sms_delivery_rate_90d
FROM population
LEFT JOIN per_customer USING (customer_id)
"""

VOICE_SQL = """
WITH surveys_before AS (
    SELECT customer_id, response_id, responded_at, survey_type, score
    FROM {surveys}
    WHERE responded_at < {cutoff}
),
per_customer AS (
    SELECT customer_id,
           max(responded_at) AS last_survey_at,
           count(*) AS survey_responses,
           -- the latest NPS answer; two at the same instant: the later response id
           arg_max(score, (responded_at, response_id)) FILTER (WHERE survey_type = 'nps') AS last_nps,
           avg(score) FILTER (WHERE survey_type = 'csat' AND responded_at >= {since_365d}) AS mean_csat_365d
    FROM surveys_before
    GROUP BY customer_id
)
SELECT population.customer_id,
       last_survey_at,
       coalesce(survey_responses, 0) AS survey_responses,
       last_nps,
       mean_csat_365d,
       CASE WHEN last_nps >= 9 THEN 'promoter'
            WHEN last_nps >= 7 THEN 'passive'
            WHEN last_nps >= 0 THEN 'detractor'
       END AS last_nps_category
FROM population
LEFT JOIN per_customer USING (customer_id)
"""

SUPPORT_SQL = """
WITH tickets_before AS (
    -- a response or resolution at or after the cutoff has not happened yet at the cutoff
    SELECT customer_id, opened_at,
           CASE WHEN first_response_at < {cutoff} THEN first_response_at END AS first_response_at,
           CASE WHEN resolved_at < {cutoff} THEN resolved_at END AS resolved_at,
           opened_at >= {since_365d} AS opened_in_365d
    FROM {tickets}
    WHERE opened_at < {cutoff}
),
durations AS (
    SELECT *,
           (epoch_us(first_response_at) - epoch_us(opened_at)) / 3600e6 AS first_response_hours,
           (epoch_us(resolved_at) - epoch_us(opened_at)) / 3600e6 AS resolution_hours
    FROM tickets_before
),
per_customer AS (
    SELECT customer_id,
           count(*) FILTER (WHERE opened_at >= {since_90d}) AS tickets_90d,
           count(*) FILTER (WHERE opened_in_365d) AS tickets_365d,
           count(*) FILTER (WHERE resolved_at IS NULL) AS open_tickets,
           avg(first_response_hours) FILTER (WHERE opened_in_365d) AS mean_first_response_hours_365d,
           max(first_response_hours) FILTER (WHERE opened_in_365d) AS max_first_response_hours_365d,
           avg(resolution_hours) FILTER (WHERE resolved_at >= {since_365d}) AS mean_resolution_hours_365d,
           max(resolution_hours) FILTER (WHERE resolved_at >= {since_365d}) AS max_resolution_hours_365d
    FROM durations
    GROUP BY customer_id
)
SELECT population.customer_id,
       coalesce(tickets_90d, 0) AS tickets_90d,
       coalesce(tickets_365d, 0) AS tickets_365d,
       coalesce(open_tickets, 0) AS open_tickets,
       mean_first_response_hours_365d,
       max_first_response_hours_365d,
       mean_resolution_hours_365d,
       max_resolution_hours_365d
FROM population
LEFT JOIN per_customer USING (customer_id)
"""

PROFILE_SQL = """
WITH accounts_opened AS (
    -- source-system accounts opened by the cutoff: a later one must not show in an older snapshot
    SELECT customer_id, count(*) AS source_systems
    FROM {crosswalk}
    WHERE signup_at < {cutoff}
    GROUP BY customer_id
),
profiles AS (
    SELECT customer_id, city, acquisition_channel, marketing_opt_in,
           -- a signup after the cutoff (someone who ordered first) is not known yet
           CASE WHEN signup_at < {cutoff} THEN signup_at END AS signup_at,
           year({cutoff}) - birth_year AS age
    FROM {customers}
)
SELECT population.customer_id,
       signup_at,
       coalesce(accounts_opened.source_systems, 0) AS source_systems,
       CASE WHEN marketing_opt_in THEN 1 WHEN NOT marketing_opt_in THEN 0 END AS marketing_opt_in,
       acquisition_channel,
       city,
       CASE WHEN age < 25 THEN '<25'
            WHEN age < 35 THEN '25-34'
            WHEN age < 45 THEN '35-44'
            WHEN age < 55 THEN '45-54'
            WHEN age >= 55 THEN '55+'
       END AS age_band
FROM population
LEFT JOIN profiles USING (customer_id)
LEFT JOIN accounts_opened USING (customer_id)
"""

# {btyd_values}: the family's values of one cutoff, computed in Python from its purchases family
# (features/btyd.py: maximum likelihood does not fit in SQL) and registered with DuckDB.
BTYD_SQL = """
SELECT population.customer_id, {btyd_columns}
FROM population
LEFT JOIN {btyd_values} AS btyd_values USING (customer_id)
"""

FAMILY_SQL: dict[Family, str] = {
    "purchases": PURCHASES_SQL,
    "engagement": ENGAGEMENT_SQL,
    "voice": VOICE_SQL,
    "support": SUPPORT_SQL,
    "profile": PROFILE_SQL,
    "btyd": BTYD_SQL,
}
BTYD_VALUES = "btyd_values"


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class SnapshotReport:
    """What one build wrote: the cutoffs, customers per cutoff, tables absent from the lake."""

    cutoffs: tuple[date, ...]
    customers: dict[date, int]
    absent_tables: tuple[str, ...]
    seconds: float
    features_dir: Path
    as_of: str | None = None  # the live as-of and why, when the cutoffs are the default ones
    removed: tuple[date, ...] = ()  # snapshots after the live as-of, deleted
    btyd_unfitted: dict[date, tuple[str, ...]] = field(default_factory=dict)  # cutoffs whose btyd family is NULL

    @property
    def null_families(self) -> tuple[Family, ...]:
        """Families written all NULL because their lake table is absent."""
        return tuple(family for family in FAMILIES if FAMILY_SOURCE_TABLE[family] in self.absent_tables)

    def render(self) -> RenderableType:
        table = Table(title="custlens features build", title_justify="left")
        table.add_column("cutoff")
        table.add_column("customers", justify="right")
        for cutoff in self.cutoffs:
            table.add_row(cutoff.isoformat(), f"{self.customers[cutoff]:,}")
        lines = [
            f"{len(self.cutoffs)} cutoff(s) x {len(FAMILIES)} families in {self.seconds:.1f} s",
            *(
                f"[yellow]{family}: all NULL, the lake has no {FAMILY_SOURCE_TABLE[family]} table[/]"
                for family in self.null_families
            ),
            *(
                f"[yellow]btyd at {cutoff}: NULL where no fit: {reason}[/]"
                for cutoff, reasons in self.btyd_unfitted.items()
                for reason in reasons
            ),
            f"snapshots: {self.features_dir}/<family>/<YYYY-MM-DD>.parquet",
        ]
        notes = [f"latest: {self.as_of}"] if self.as_of else []
        if self.removed:
            notes.append(f"[yellow]removed snapshot(s) {', '.join(map(str, self.removed))}: after the as-of "
                         "(an earlier setting)[/]")  # fmt: skip
        # paths stay on one line, so they can be copied even from a narrow terminal
        return Group(
            table,
            *(Text.from_markup(line, overflow="ignore") for line in lines),
            *(Text.from_markup(line, overflow="fold") for line in notes),
        )


# ---------------------------------------------------------------- cutoffs


# `features.cutoff_every: auto` takes Mondays when the orders span less than this many days. A
# year and a half of history has 18 month starts, and a 90-day churn split then trains on 6 and
# validates on 3 of them; Mondays give it about 4x the rows (docs/model-quality.md measures it).
WEEKLY_BELOW_DAYS = 730


@dataclass(frozen=True)
class GridCounts:
    """The defaults of the settings counted in grid cutoffs, so that they span about the same time
    on either grid: snapshots kept (`features.max_cutoffs`), training cutoffs
    (`training.train_cutoffs`) and validation cutoffs (`training.validation_cutoffs`)."""

    kept: int
    train: int
    validation: int


GRID_COUNTS = {
    "month": GridCounts(kept=48, train=6, validation=3),
    "week": GridCounts(kept=104, train=26, validation=13),
}


OrderSpan = tuple[datetime | None, datetime | None]  # first and last order instants (naive UTC)


def grid_every(settings: Settings, span: OrderSpan | None = None) -> str:
    """`month` or `week`: the grid `features.cutoff_every` names, or for `auto` the one the order
    history calls for (WEEKLY_BELOW_DAYS; `span`: the lake's, when the caller has read it already);
    month starts for a lake without orders."""
    every = settings.features.cutoff_every
    if every != "auto":
        return every
    first_order, last_order = span or _order_span(settings)
    if first_order is None or last_order is None:
        return "month"
    return "week" if (last_order - first_order).days < WEEKLY_BELOW_DAYS else "month"


def grid_counts(settings: Settings, every: str | None = None) -> GridCounts:
    """The grid's counts (of `every`, by default the grid_every of the lake) with the configured
    ones in place of the defaults."""
    default = GRID_COUNTS[every or grid_every(settings)]
    return GridCounts(
        kept=settings.features.max_cutoffs or default.kept,
        train=settings.training.train_cutoffs or default.train,
        validation=settings.training.validation_cutoffs or default.validation,
    )


def default_cutoffs(settings: Settings, live: AsOf | None = None) -> list[date]:
    """Month starts (or Mondays) over the lake's order history, the latest `features.max_cutoffs`
    of them, plus the live as-of (today for fresh data, else the end of the data); sorted and unique."""
    periodic, every = _grid(settings)
    cutoffs = set(periodic[-grid_counts(settings, every).kept :])
    cutoffs.add((live or live_as_of(settings)).day)
    return sorted(cutoffs)


def grid(settings: Settings) -> list[date]:
    """Every month start (or Monday) strictly after the first order, up to the day after the last."""
    return _grid(settings)[0]


def _grid(settings: Settings) -> tuple[list[date], str]:
    """`grid` and the grid it is on (grid_every), from one read of the lake's order span."""
    span = _order_span(settings)
    first_order, last_order = span
    every = grid_every(settings, span)
    periodic: list[date] = []
    if first_order is not None and last_order is not None:
        # D 00:00 must come strictly after the first order: the earliest candidate is the day after it
        day, last_day = first_order.date() + timedelta(days=1), last_order.date() + timedelta(days=1)
        if not is_period_start(day, every):
            day = _next_period_start(day, every)
        while day <= last_day:
            periodic.append(day)
            day = _next_period_start(day, every)
    return periodic, every


def remove_snapshots_after(settings: Settings, day: date) -> tuple[date, ...]:
    """Delete the snapshot files of cutoffs after `day` (the live as-of): written under an earlier
    setting, a wall-clock snapshot of data that ended long before, say. Returns their cutoffs."""
    removed: set[date] = set()
    for family in FAMILIES:
        folder = family_dir(settings, family)
        # the btyd family's fit files (<cutoff>.json) go with its snapshots
        for path in [*folder.glob("*.parquet"), *folder.glob("*.json")] if folder.is_dir() else ():
            try:
                cutoff = date.fromisoformat(path.stem)
            except ValueError:
                continue
            if cutoff > day:
                path.unlink(missing_ok=True)
                removed.add(cutoff)
    return tuple(sorted(removed))


def is_period_start(day: date, every: str) -> bool:
    """Whether `day` is on the cutoff grid: a month start, or a Monday."""
    return day.day == 1 if every == "month" else day.weekday() == 0


def _next_period_start(day: date, every: str) -> date:
    """The first month start (or Monday) strictly after `day`."""
    if every == "month":
        return date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return day + timedelta(days=7 - day.weekday())


def _order_span(settings: Settings) -> OrderSpan:
    """First and last order instants of the lake (naive UTC), None when it has no orders."""
    orders = table_path(settings, "orders")
    if not orders.exists():
        raise missing_table(settings, "orders")
    with closing(duckdb.connect()) as con:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute(
            f"SELECT CAST(min(ordered_at) AS TIMESTAMP), CAST(max(ordered_at) AS TIMESTAMP) "
            f"FROM read_parquet({sql_literal(orders)})"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


# ---------------------------------------------------------------- the build


def family_dir(settings: Settings, family: Family) -> Path:
    """The folder holding one Parquet file per cutoff of `family`."""
    return layout.family_dir(family, settings.data_dir)


def snapshot_path(settings: Settings, family: Family, cutoff: date) -> Path:
    """Where the snapshot of `family` at `cutoff` is written."""
    return layout.snapshot_file(family, cutoff, settings.data_dir)


def build_default_snapshots(settings: Settings, console: Console | None = None) -> SnapshotReport:
    """`custlens features build` without --as-of: the grid and the live as-of, built after the
    snapshots beyond that as-of are removed (they would otherwise pass for the latest)."""
    for table in REQUIRED_TABLES:
        if not table_path(settings, table).exists():
            raise missing_table(settings, table)
    live = live_as_of(settings)
    removed = remove_snapshots_after(settings, live.day)
    report = build_snapshots(settings, default_cutoffs(settings, live), console=console)
    return replace(report, as_of=live.line(), removed=removed)


def snapshot_warnings(settings: Settings, report: SnapshotReport) -> list[str]:
    """What a build leaves for the user to know: cutoffs asked for after the as-of (they describe
    days the data does not reach), and an online store still serving a snapshot just removed."""
    from features.online import materialized_cutoff

    warnings: list[str] = []
    try:
        live = live_as_of(settings)
    except CustlensError:
        return warnings
    later = after_data_end(report.cutoffs, live)
    if later:
        warnings.append(
            f"{', '.join(map(str, later))}: after the as-of {live.day} ({live.why}): such a snapshot describes days "
            "the data does not reach; `custlens features build` without --as-of removes it"
        )
    served = materialized_cutoff(settings)
    periodic, every = _grid(settings)
    most = grid_counts(settings, every).kept
    if report.as_of and len(periodic) > most:
        kept = periodic[-most]
        warnings.append(
            f"features.max_cutoffs = {most} keeps the latest of {len(periodic)} grid cutoffs: "
            f"none before {kept} (the history starts {periodic[0]}); raise it to train on all of them"
        )
    if served is not None and served in report.removed:
        warnings.append(
            f"the online store still serves the removed snapshot {served}: run `custlens features materialize` "
            f"to serve {live.day}"
        )
    return warnings


def build_snapshots(settings: Settings, cutoffs: Sequence[date], console: Console | None = None) -> SnapshotReport:
    """Write every family's snapshot at each cutoff, replacing earlier files of those cutoffs;
    raise CustlensError when the lake has no customers or orders table."""
    started = time.perf_counter()
    for table in REQUIRED_TABLES:
        if not table_path(settings, table).exists():
            raise missing_table(settings, table)
    absent = tuple(
        table for table in dict.fromkeys(FAMILY_SOURCE_TABLE.values()) if not table_path(settings, table).exists()
    )
    ordered_cutoffs = tuple(sorted(set(cutoffs)))
    for family in FAMILIES:
        family_dir(settings, family).mkdir(parents=True, exist_ok=True)
    customers: dict[date, int] = {}
    unfitted: dict[date, tuple[str, ...]] = {}
    progress = progress_bar(console, transient=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".features-work-", dir=settings.data_dir))
    try:
        limits = settings.features
        connection = duckdb_connect(limits.duckdb_memory_limit, limits.duckdb_threads, work / "duckdb")
        with closing(connection) as con, progress:
            task = progress.add_task("feature snapshots", total=len(ordered_cutoffs))
            for cutoff in ordered_cutoffs:
                cutoff_started = time.perf_counter()
                customers[cutoff], fit = _build_cutoff(con, settings, cutoff, absent)
                if fit.unfitted:
                    unfitted[cutoff] = tuple(fit.unfitted)
                progress.advance(task)
                progress.console.print(
                    f"[green]✓[/] {cutoff.isoformat()}: {customers[cutoff]:,} customers "
                    f"({time.perf_counter() - cutoff_started:.1f} s)",
                    highlight=False,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SnapshotReport(
        cutoffs=ordered_cutoffs,
        customers=customers,
        absent_tables=absent,
        seconds=time.perf_counter() - started,
        features_dir=settings.features_dir,
        btyd_unfitted=unfitted,
    )


def _build_cutoff(
    con: duckdb.DuckDBPyConnection, settings: Settings, cutoff: date, absent: tuple[str, ...]
) -> tuple[int, BtydFit]:
    """Write the family files of one cutoff and its btyd fit file; return how many customers they
    hold and the fit."""
    placeholders = _placeholders(settings, cutoff)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE population AS " + POPULATION_SQL.format(**placeholders) + " ORDER BY customer_id"
    )
    # all files are computed before any is swapped in: a failure leaves the old ones whole
    written: dict[Path, Path] = {}
    fit: BtydFit | None = None
    try:
        for family in FAMILIES:
            if family == "btyd":
                # fitted on this cutoff's purchases family, just written (its temporary file)
                purchases = written[snapshot_path(settings, "purchases", cutoff)]
                fit = _register_btyd_values(con, purchases, settings, cutoff)
            query = _family_query(family, placeholders, present=FAMILY_SOURCE_TABLE[family] not in absent)
            target = snapshot_path(settings, family, cutoff)
            written[target] = _temporary(target)
            try:
                copy_to_parquet(con, query, written[target])
            except duckdb.Error as exc:
                reason = str(exc).splitlines()[0].rstrip(".")
                raise CustlensError(
                    f"computing the {family} features at {cutoff} from {settings.lake_dir} failed: {reason}. "
                    "The files of this cutoff were left as they were; if DuckDB ran out of memory, raise "
                    "features.duckdb_memory_limit or lower features.duckdb_threads"
                ) from exc
        assert fit is not None
        fit_file = layout.btyd_fit_file(cutoff, settings.data_dir)
        written[fit_file] = _temporary(fit_file)
        fit.write(written[fit_file])
        for target, temporary in written.items():
            os.replace(temporary, target)
    finally:
        con.unregister(BTYD_VALUES)
        for temporary in written.values():
            temporary.unlink(missing_ok=True)
    row = con.execute("SELECT count(*) FROM population").fetchone()
    assert row is not None
    return int(row[0]), fit


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp")


def _register_btyd_values(con: duckdb.DuckDBPyConnection, purchases: Path, settings: Settings, cutoff: date) -> BtydFit:
    """Fit the cutoff's population on its purchases family and register the btyd family's values
    with DuckDB as `btyd_values`, for BTYD_SQL to write like any family."""
    values, fit = family_at(pq.read_table(purchases, columns=list(SUMMARY_COLUMNS)), cutoff, window_days(settings))
    con.register(BTYD_VALUES, values)
    return fit


def _family_query(family: Family, placeholders: dict[str, str], present: bool = True) -> str:
    """The snapshot of one family over the `population` table: customer_id, event_timestamp, then
    the catalog's features in catalog order and storage types (all NULL when not `present`)."""
    features = family_features(family)
    if present:
        values = [f"CAST({feature.name} AS {SQL_TYPES[feature.kind]}) AS {feature.name}" for feature in features]
        source = f"({FAMILY_SQL[family].format(**placeholders)}) AS features"
    else:
        values = [f"CAST(NULL AS {SQL_TYPES[feature.kind]}) AS {feature.name}" for feature in features]
        source = "population"
    return (
        f"SELECT customer_id, {placeholders['cutoff']} AS event_timestamp, "
        + ", ".join(values)
        + f" FROM {source} ORDER BY customer_id"
    )


def _placeholders(settings: Settings, cutoff: date) -> dict[str, str]:
    instant = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    values = {
        "cutoff": _instant(instant),
        "own_actions": ", ".join(f"'{name}'" for name in OWN_ACTIONS),
        "net_revenue": net_revenue_sql(),
        "btyd_values": BTYD_VALUES,
        "btyd_columns": ", ".join(FEATURE_NAMES),
    }
    for days in DAY_WINDOWS:
        values[f"since_{days}d"] = _instant(instant - timedelta(days=days))
    for table in dict.fromkeys([*FAMILY_SOURCE_TABLE.values(), *REQUIRED_TABLES, "crosswalk"]):
        values[table] = f"read_parquet({sql_literal(table_path(settings, table))})"
    return values


def _instant(value: datetime) -> str:
    return f"TIMESTAMPTZ '{value.strftime('%Y-%m-%d %H:%M:%S')}+00'"
