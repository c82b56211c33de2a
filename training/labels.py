"""Labels from the lake, strictly after each cutoff: churn, 30-day repurchase (and the date of
the next order), and 12-month net revenue. Features see data before a cutoff, labels data
from it on: a label window is [cutoff, cutoff + N days)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import pandas as pd

from custlens.settings import Settings
from features.lake.tables import cutoff_instant, duckdb_connect, table_path

LABELS_SQL = """
WITH cutoffs AS (
    SELECT unnest($cutoffs::TIMESTAMPTZ[]) AS cutoff
),
completed AS (
    -- returned and cancelled orders earn nothing: net revenue counts completed orders only
    SELECT customer_id, ordered_at, CAST(net_amount AS DOUBLE) AS net_amount
    FROM read_parquet($orders)
    WHERE status = 'completed'
),
per_customer AS (
    SELECT cutoffs.cutoff,
           completed.customer_id,
           count(*) FILTER (WHERE ordered_at < cutoff) AS orders_before,
           count(*) FILTER (WHERE ordered_at < cutoff AND ordered_at >= cutoff - to_days($activity_days))
               AS orders_in_activity_window,
           count(*) FILTER (WHERE ordered_at >= cutoff AND ordered_at < cutoff + to_days($churn_days))
               AS orders_in_churn_window,
           count(*) FILTER (WHERE ordered_at >= cutoff AND ordered_at < cutoff + to_days($repurchase_days))
               AS orders_in_repurchase_window,
           min(ordered_at) FILTER (WHERE ordered_at >= cutoff) AS next_order_at,
           coalesce(sum(net_amount) FILTER (WHERE ordered_at >= cutoff AND ordered_at < cutoff + to_days($clv_days)), 0)
               AS revenue_next
    FROM cutoffs
    CROSS JOIN completed
    GROUP BY ALL
)
-- customers who had bought before the cutoff: the ones the models score
SELECT customer_id,
       cutoff,
       orders_in_activity_window > 0 AS active,
       CASE WHEN orders_in_activity_window > 0 THEN orders_in_churn_window = 0 END AS churned,
       orders_in_repurchase_window > 0 AS repurchased,
       next_order_at,
       epoch_us(next_order_at - cutoff) / 86400e6 AS days_to_next_order,
       revenue_next
FROM per_customer
WHERE orders_before > 0
ORDER BY cutoff, customer_id
"""


def window_complete(cutoff: date, window_days: int, end: datetime) -> bool:
    return cutoff_instant(cutoff) + timedelta(days=window_days) <= end


def compute_labels(settings: Settings, cutoffs: Sequence[date]) -> pd.DataFrame:
    """One row per (customer who bought before the cutoff, cutoff) with every model's label.

    `churned` is NULL for customers not active in the activity window before the cutoff (churn
    is not defined for them). Windows are the config's; whether a window is complete at the
    lake's end is the caller's question (`window_complete`).
    """
    windows = settings.training
    con = duckdb_connect()
    try:
        frame = con.execute(
            LABELS_SQL,
            {
                "cutoffs": [cutoff_instant(day) for day in cutoffs],
                "orders": str(table_path(settings, "orders")),
                "activity_days": windows.activity_window_days,
                "churn_days": windows.churn_window_days,
                "repurchase_days": windows.repurchase_window_days,
                "clv_days": windows.clv_window_days,
            },
        ).df()
    finally:
        con.close()
    frame["cutoff"] = pd.to_datetime(frame["cutoff"], utc=True)
    frame["churned"] = frame["churned"].astype("boolean")
    return frame
