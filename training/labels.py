"""Labels from the lake, strictly after each cutoff, each over its configured window: churn,
repurchase (and the date of the next order), and net revenue. Features see data before a cutoff,
labels data from it on: a label window is [cutoff, cutoff + N days).

Purchases are completed orders; revenue is net revenue (features.lake.tables.net_revenue_sql):
completed orders minus the refunds (credit notes) dated in the window. A refund is never a
purchase, so it neither makes a customer active nor ends a churn window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import pandas as pd

from custlens.settings import Settings
from features.lake.tables import cutoff_instant, duckdb_connect, net_revenue_sql, table_path

LABELS_SQL = """
WITH cutoffs AS (
    SELECT unnest($cutoffs::TIMESTAMPTZ[]) AS cutoff
),
earning AS (
    -- rows that earn or give back money: completed orders and refunds (cancelled orders and orders
    -- sent back whole earn 0, and neither is a purchase)
    SELECT customer_id, ordered_at, status = 'completed' AS is_purchase,
           CAST({net_revenue} AS DOUBLE) AS net_revenue
    FROM read_parquet($orders)
    WHERE status = 'completed' OR (status = 'returned' AND net_amount < 0)
),
per_customer AS (
    SELECT cutoffs.cutoff,
           earning.customer_id,
           count(*) FILTER (WHERE is_purchase AND ordered_at < cutoff) AS orders_before,
           count(*) FILTER (WHERE is_purchase AND ordered_at < cutoff
                            AND ordered_at >= cutoff - to_days($activity_days))
               AS orders_in_activity_window,
           count(*) FILTER (WHERE is_purchase AND ordered_at >= cutoff AND ordered_at < cutoff + to_days($churn_days))
               AS orders_in_churn_window,
           count(*) FILTER (WHERE is_purchase AND ordered_at >= cutoff
                            AND ordered_at < cutoff + to_days($repurchase_days))
               AS orders_in_repurchase_window,
           min(ordered_at) FILTER (WHERE is_purchase AND ordered_at >= cutoff) AS next_order_at,
           -- net: a refund in the window lowers it, even of an order placed before the cutoff
           coalesce(sum(net_revenue) FILTER (WHERE ordered_at >= cutoff
                                             AND ordered_at < cutoff + to_days($clv_days)), 0)
               AS revenue_next
    FROM cutoffs
    CROSS JOIN earning
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
""".replace("{net_revenue}", net_revenue_sql())


def window_complete(cutoff: date, window_days: int, end: datetime) -> bool:
    return cutoff_instant(cutoff) + timedelta(days=window_days) <= end


def compute_labels(settings: Settings, cutoffs: Sequence[date]) -> pd.DataFrame:
    """One row per (customer who bought before the cutoff, cutoff) with every model's label.

    `churned` is NULL for customers not active in the activity window before the cutoff (churn
    is not defined for them). `revenue_next` (the CLV label) is net revenue in the window and is
    not clipped at 0: it is negative when the window's refunds exceed its purchases (a refund of
    an order bought before the cutoff, and nothing bought since). CLV is net; the Tweedie fit,
    which needs targets >= 0, floors its own copy (training.specs.ModelSpec.fit_targets), and the
    test metrics compare predictions with the net label. Windows are the config's; whether a window is complete at the
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
