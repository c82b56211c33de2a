"""Feature snapshots on tiny hand-made lakes: hand-computed values per family, nothing from at or
after the cutoff, NULL (not 0) for undefined rates and absent tables, one row per customer in
every family file with the exact Parquet types, and the default cutoffs."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from custlens.errors import CustlensError
from custlens.settings import Settings
from features.asof import live_as_of
from features.catalog import BTYD_SUMMARY_FEATURES, FAMILIES, Family, family_features
from features.lake.tables import cutoff_instant
from features.snapshot_reader import load_packed_snapshot, snapshot_features_frame
from features.snapshots import (
    GRID_COUNTS,
    build_snapshots,
    default_cutoffs,
    family_dir,
    grid_counts,
    grid_every,
    snapshot_path,
)
from training.baselines.btyd import rfm_summary, rfm_summary_from_features

CUTOFF = date(2024, 7, 1)  # the instant 2024-07-01 00:00 UTC; "last 30 days" starts 2024-06-01 00:00
TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)

# The lake as features/ingest.py writes it.
LAKE_SCHEMAS = {
    "customers": pa.schema(
        [("customer_id", pa.string()), ("signup_at", TS), ("email_hash", pa.string()), ("phone_hash", pa.string()),
         ("city", pa.string()), ("gender", pa.string()), ("birth_year", pa.int64()),
         ("acquisition_channel", pa.string()), ("marketing_opt_in", pa.bool_()), ("n_source_ids", pa.int64()),
         ("sources", pa.string())]
    ),
    "crosswalk": pa.schema(
        [("source", pa.string()), ("source_customer_id", pa.string()), ("customer_id", pa.string()),
         ("signup_at", TS)]
    ),
    "orders": pa.schema(
        [("customer_id", pa.string()), ("order_id", pa.string()), ("source", pa.string()),
         ("source_customer_id", pa.string()), ("ordered_at", TS), ("status", pa.string()), ("net_amount", MONEY),
         ("channel", pa.string()), ("gross_amount", MONEY), ("discount_amount", MONEY), ("items", pa.int64()),
         ("category", pa.string()), ("currency", pa.string())]
    ),
    "engagement_events": pa.schema(
        [("customer_id", pa.string()), ("event_id", pa.string()), ("source", pa.string()),
         ("source_customer_id", pa.string()), ("occurred_at", TS), ("event_type", pa.string()),
         ("channel", pa.string()), ("campaign_id", pa.string()), ("session_id", pa.string()),
         ("duration_s", pa.float64()), ("page_views", pa.int64())]
    ),
    "surveys": pa.schema(
        [("customer_id", pa.string()), ("response_id", pa.string()), ("source_customer_id", pa.string()),
         ("responded_at", TS), ("survey_type", pa.string()), ("score", pa.int64()), ("source", pa.string()),
         ("channel", pa.string()), ("comment", pa.string())]
    ),
    "tickets": pa.schema(
        [("customer_id", pa.string()), ("ticket_id", pa.string()), ("source_customer_id", pa.string()),
         ("opened_at", TS), ("source", pa.string()), ("first_response_at", TS), ("resolved_at", TS),
         ("channel", pa.string()), ("category", pa.string()), ("status", pa.string())]
    ),
}  # fmt: skip
ROW_ID = {"orders": "order_id", "engagement_events": "event_id", "surveys": "response_id", "tickets": "ticket_id"}
ARROW_TYPES = {"count": pa.int64(), "number": pa.float64(), "timestamp": TS, "category": pa.string()}

Rows = list[dict[str, Any]]


def at(text: str) -> datetime:
    """'2024-06-20 12:00' as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---------------------------------------------------------------- tiny lakes, one row builder per table


def customer(customer_id: str, signup: str = "2022-01-01", **values: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "signup_at": at(signup), "n_source_ids": 1, **values}


def order(customer_id: str, ordered: str, net: str, status: str = "completed", **values: Any) -> dict[str, Any]:
    money = {key: Decimal(value) for key, value in values.items() if key in ("gross_amount", "discount_amount")}
    return {"customer_id": customer_id, "ordered_at": at(ordered), "status": status, "net_amount": Decimal(net),
            **values, **money}  # fmt: skip


def event(customer_id: str, occurred: str, event_type: str, session_id: str | None = None, **values: Any) -> dict:
    return {"customer_id": customer_id, "occurred_at": at(occurred), "event_type": event_type,
            "session_id": session_id, **values}  # fmt: skip


def survey(customer_id: str, responded: str, survey_type: str, score: int, **values: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "responded_at": at(responded), "survey_type": survey_type, "score": score,
            **values}  # fmt: skip


def ticket(customer_id: str, opened: str, first_response: str | None = None, resolved: str | None = None) -> dict:
    return {"customer_id": customer_id, "opened_at": at(opened),
            "first_response_at": at(first_response) if first_response else None,
            "resolved_at": at(resolved) if resolved else None}  # fmt: skip


def accounts_of(customers: Rows) -> Rows:
    """The crosswalk ingest would write: `n_source_ids` accounts per customer, opened at signup."""
    return [
        {"source": f"s{k}", "source_customer_id": f"{row['customer_id']}-{k}", "customer_id": row["customer_id"],
         "signup_at": row["signup_at"]}
        for row in customers for k in range(row.get("n_source_ids") or 1)
    ]  # fmt: skip


def write_lake(settings: Settings, **tables: Rows) -> Settings:
    """Write each given table to settings.lake_dir with the lake's exact types; ids are filled in."""
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    if "customers" in tables and "crosswalk" not in tables:
        tables["crosswalk"] = accounts_of(tables["customers"])
    for table, rows in tables.items():
        schema = LAKE_SCHEMAS[table]
        filled = []
        for number, row in enumerate(rows):
            complete = dict.fromkeys(schema.names) | row
            if table in ROW_ID and complete[ROW_ID[table]] is None:
                complete[ROW_ID[table]] = f"{table[0].upper()}{number:04d}"
            filled.append(complete)
        pq.write_table(pa.Table.from_pylist(filled, schema=schema), settings.lake_dir / f"{table}.parquet")
    return settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def build(settings: Settings, cutoff: date = CUTOFF) -> dict[Family, pd.DataFrame]:
    build_snapshots(settings, [cutoff])
    return {family: pd.read_parquet(snapshot_path(settings, family, cutoff)) for family in FAMILIES}


def features_of(snapshot: dict[Family, pd.DataFrame], family: Family, customer_id: str) -> dict[str, Any]:
    frame = snapshot[family]
    rows = frame[frame["customer_id"] == customer_id]
    assert len(rows) == 1, f"{customer_id} has {len(rows)} rows in {family}"
    return {name: None if is_null(value) else value for name, value in rows.iloc[0].items()}


def is_null(value: Any) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and pd.isna(value))


# ---------------------------------------------------------------- purchases


def purchase_rows() -> dict[str, Rows]:
    return dict(
        customers=[customer("A"), customer("B"), customer("C")],
        orders=[
            # A: four completed orders, gaps 439, 47 and 50.5 days
            order("A", "2023-01-01 00:00", "100", category="shoes", channel="web"),
            order("A", "2024-03-15 00:00", "200", gross_amount="250", discount_amount="50", category="shoes",
                  channel="web"),
            order("A", "2024-05-01 00:00", "300", gross_amount="300", discount_amount="0", category="bags",
                  channel="app"),
            order("A", "2024-06-20 12:00", "400", gross_amount="450", discount_amount="50", category="bags",
                  channel="app"),
            order("A", "2024-06-10 00:00", "50", status="returned", category="hats"),
            order("A", "2024-06-11 00:00", "70", status="cancelled"),
            # B: two completed orders, the second exactly at the start of the 30-day window
            order("B", "2024-05-30 00:00", "10"),
            order("B", "2024-06-01 00:00", "20"),
        ],
    )  # fmt: skip


def purchase_lake(settings: Settings) -> Settings:
    return write_lake(settings, **purchase_rows())


def test_purchase_counts_revenue_and_trend_follow_the_windows(settings: Settings) -> None:
    # given A's orders on 2023-01-01, 2024-03-15, 2024-05-01 and 2024-06-20 (completed)
    snapshot = build(purchase_lake(settings))
    # when / then
    a = features_of(snapshot, "purchases", "A")
    assert (a["orders_30d"], a["orders_90d"], a["orders_365d"], a["orders_lifetime"]) == (1, 2, 3, 4)
    assert (a["revenue_30d"], a["revenue_90d"], a["revenue_365d"], a["revenue_lifetime"]) == (400, 700, 900, 1000)
    assert a["avg_order_value"] == 250
    # 2024-03-15 is in the 90 days before the last 90: 2 - 1 orders and 700 - 200 revenue
    assert (a["orders_trend_90d"], a["revenue_trend_90d"]) == (1, 500)
    assert (a["categories_365d"], a["channels_365d"]) == (2, 2)  # the returned order's category is not bought
    assert a["first_order_at"] == at("2023-01-01 00:00")
    assert a["last_order_at"] == at("2024-06-20 12:00")


def test_window_start_is_inclusive(settings: Settings) -> None:
    # given an order of B exactly 30 days before the cutoff
    snapshot = build(purchase_lake(settings))
    # then it is in the last 30 days
    assert features_of(snapshot, "purchases", "B")["orders_30d"] == 1


def test_gaps_between_orders_are_fractional_days_with_sample_std(settings: Settings) -> None:
    # given gaps of 439, 47 and 50.5 days (A) and one gap of 2 days (B)
    snapshot = build(purchase_lake(settings))
    a, b = features_of(snapshot, "purchases", "A"), features_of(snapshot, "purchases", "B")
    # then
    gaps = [439.0, 47.0, 50.5]
    mean = sum(gaps) / 3
    assert a["mean_days_between_orders"] == pytest.approx(mean)
    assert a["std_days_between_orders"] == pytest.approx((sum((g - mean) ** 2 for g in gaps) / 2) ** 0.5)
    assert b["mean_days_between_orders"] == pytest.approx(2.0)
    assert b["std_days_between_orders"] is None  # one gap has no spread


def test_return_cancellation_and_discount_shares(settings: Settings) -> None:
    # given A's last 365 days: 3 completed, 1 returned, 1 cancelled; discounts 50 + 0 + 50 of gross 1,000
    snapshot = build(purchase_lake(settings))
    a = features_of(snapshot, "purchases", "A")
    # then
    assert a["return_rate_365d"] == pytest.approx(1 / 4)
    assert a["cancellation_rate_365d"] == pytest.approx(1 / 5)
    assert a["discount_share_365d"] == pytest.approx(100 / 1000)


def refund_rows() -> dict[str, Rows]:
    """F bought once and got it all back; G bought twice and got part of one back (a credit note:
    a `returned` row with a negative amount, dated after the order)."""
    return dict(
        customers=[customer("F"), customer("G")],
        orders=[
            order("F", "2024-03-01 10:00", "300", category="shoes", channel="web"),
            order("F", "2024-03-05 10:00", "-300", status="returned", category="shoes", channel="web"),
            order("G", "2023-12-01 10:00", "100", category="bags", channel="web"),
            order("G", "2024-05-01 10:00", "200", category="bags", channel="web"),
            order("G", "2024-06-15 10:00", "-50", status="returned", category="hats", channel="app"),
            order("G", "2024-06-16 10:00", "70", status="cancelled"),
        ],
    )  # fmt: skip


def refund_lake(settings: Settings) -> Settings:
    return write_lake(settings, **refund_rows())


def test_a_fully_refunded_customer_has_zero_net_revenue(settings: Settings) -> None:
    # given F's order of 300 and its refund of 300
    f = features_of(build(refund_lake(settings)), "purchases", "F")
    # then nothing was earned, and the one order is still one order
    assert (f["revenue_90d"], f["revenue_365d"], f["revenue_lifetime"], f["avg_order_value"]) == (0, 0, 0, 0)
    assert (f["orders_lifetime"], f["orders_365d"]) == (1, 1)


def test_a_partial_refund_lowers_revenue_in_the_windows_it_is_dated_in(settings: Settings) -> None:
    # given G's orders of 100 (2023-12-01) and 200 (2024-05-01), and a refund of 50 on 2024-06-15
    g = features_of(build(refund_lake(settings)), "purchases", "G")
    # then net revenue is 250 ever and in the year; the last 30 days hold only the refund
    assert (g["revenue_lifetime"], g["revenue_365d"], g["revenue_90d"], g["revenue_30d"]) == (250, 250, 150, -50)
    assert g["avg_order_value"] == 125  # net lifetime revenue / 2 completed orders
    assert g["revenue_trend_90d"] == 150  # the 90 days before held nothing


def test_a_refund_is_not_an_order(settings: Settings) -> None:
    # given F's and G's refunds dated after their last orders, and a refund-only H who signed up later
    rows = refund_rows()
    rows["customers"].append(customer("H", signup="2024-08-01"))
    rows["orders"].append(order("H", "2024-06-01 10:00", "-20", status="returned"))
    snapshot = build(write_lake(settings, **rows))
    f, g = features_of(snapshot, "purchases", "F"), features_of(snapshot, "purchases", "G")
    # then the refunds move neither the first or last order, nor the counts, the gaps or the mix
    assert f["first_order_at"] == f["last_order_at"] == at("2024-03-01 10:00")
    assert g["last_order_at"] == at("2024-05-01 10:00")
    assert (g["orders_30d"], g["orders_90d"], g["orders_365d"], g["orders_lifetime"]) == (0, 1, 2, 2)
    assert g["mean_days_between_orders"] == pytest.approx(152.0)
    assert (g["categories_365d"], g["channels_365d"]) == (1, 1)  # the refund's hats and app were not bought
    # a refund counts as a return (the return rate is as before) but is no order of the cancellation rate
    assert g["return_rate_365d"] == pytest.approx(1 / 3)
    assert g["cancellation_rate_365d"] == pytest.approx(1 / 3)
    # and a refund alone does not make someone a customer before the cutoff
    assert "H" not in set(snapshot["purchases"]["customer_id"])


def test_customer_without_orders_has_zero_counts_and_null_means(settings: Settings) -> None:
    # given C signed up and never ordered
    snapshot = build(purchase_lake(settings))
    c = features_of(snapshot, "purchases", "C")
    # then counts and sums are 0, means, rates and timestamps NULL
    assert (c["orders_30d"], c["orders_lifetime"], c["categories_365d"], c["revenue_365d"]) == (0, 0, 0, 0)
    assert (c["orders_trend_90d"], c["revenue_trend_90d"]) == (0, 0)
    for name in ("avg_order_value", "mean_days_between_orders", "std_days_between_orders", "return_rate_365d",
                 "cancellation_rate_365d", "discount_share_365d", "first_order_at", "last_order_at"):  # fmt: skip
        assert c[name] is None, name


def test_zero_denominators_give_null_rates_not_zero(settings: Settings) -> None:
    # given D only cancelled orders, without gross amounts; E was sent emails and opened none
    write_lake(
        settings,
        customers=[customer("D"), customer("E")],
        orders=[order("D", "2024-06-01 00:00", "0", status="cancelled")],
        engagement_events=[event("E", "2024-06-10 09:00", "email_sent"), event("E", "2024-06-20 09:00", "email_sent")],
    )
    snapshot = build(settings)
    d, e = features_of(snapshot, "purchases", "D"), features_of(snapshot, "engagement", "E")
    # then D has no completed or returned orders, and no gross: NULL; E's open rate is a real 0
    assert d["return_rate_365d"] is None
    assert d["discount_share_365d"] is None
    assert d["cancellation_rate_365d"] == 1.0
    assert e["email_open_rate_30d"] == 0.0
    assert e["email_click_rate_90d"] == 0.0
    assert e["bounce_rate_90d"] is None  # no sessions
    assert e["cart_abandonment_rate_90d"] is None  # no carts
    assert e["sms_delivery_rate_90d"] is None  # no SMS sent


# ---------------------------------------------------------------- the BTYD summary (purchase days)


def btyd_rows() -> dict[str, Rows]:
    """K: three purchase days (two orders on the first), each refund netted into a different one,
    the last refunded beyond its purchase; P: a refund before its first purchase day; L: three
    orders on one day; M: a cancelled order only; N: no order."""
    return dict(
        customers=[customer(name) for name in "KLMNP"],
        orders=[
            order("K", "2024-01-10 10:00", "100"),
            order("K", "2024-01-10 18:00", "50"),  # the same UTC day: one purchase day of 150
            order("K", "2024-01-12 09:00", "-30", status="returned"),  # into 01-10: 120
            order("K", "2024-03-01 09:00", "200"),
            order("K", "2024-03-05 09:00", "-80", status="returned"),  # into 03-01 (the latest before): 120
            order("K", "2024-05-20 12:00", "60"),
            order("K", "2024-05-20 08:00", "-100", status="returned"),  # same day, earlier hour: 60 - 100 -> 0
            order("K", "2024-06-01 09:00", "500", status="cancelled"),
            order("K", "2024-06-02 09:00", "70", status="returned"),  # sent back in full: no purchase day
            order("K", "2024-07-01 00:00", "999"),  # at the cutoff: not yet
            order("K", "2024-07-02 00:00", "-120", status="returned"),
            order("P", "2024-02-01 09:00", "-40", status="returned"),  # before any purchase day: left out
            order("P", "2024-03-01 09:00", "100"),
            order("P", "2024-04-01 23:59", "200"),
            order("L", "2024-06-15 01:00", "10"),
            order("L", "2024-06-15 12:00", "20"),
            order("L", "2024-06-15 23:59", "30"),
            order("M", "2024-05-01 09:00", "80", status="cancelled"),
        ],
    )  # fmt: skip


def test_purchase_days_are_utc_days_with_a_completed_order(settings: Settings) -> None:
    # given K's completed orders on 2024-01-10 (two), 2024-03-01 and 2024-05-20, and L's three on one day
    snapshot = build(write_lake(settings, **btyd_rows()))
    k, l_, m = (features_of(snapshot, "purchases", name) for name in "KLM")
    # then K bought on three days from 2024-01-10 to 2024-05-20 (131 days), L on one
    assert (k["purchase_days_lifetime"], k["days_first_to_last_purchase_day"]) == (3, 131.0)
    assert (k["first_purchase_day_at"], k["last_purchase_day_at"]) == (at("2024-01-10 00:00"), at("2024-05-20 00:00"))
    assert (l_["purchase_days_lifetime"], l_["days_first_to_last_purchase_day"]) == (1, 0.0)
    assert l_["first_purchase_day_at"] == l_["last_purchase_day_at"] == at("2024-06-15 00:00")
    # and a cancelled order makes no purchase day
    assert (m["purchase_days_lifetime"], m["first_purchase_day_at"], m["days_first_to_last_purchase_day"]) == (
        0, None, None,
    )  # fmt: skip


def test_repeat_purchase_day_value_nets_each_refund_into_its_purchase_day(settings: Settings) -> None:
    # given K's repeat days 2024-03-01 (200, refund 80 four days later) and 2024-05-20 (60, refund 100)
    snapshot = build(write_lake(settings, **btyd_rows()))
    k, p = features_of(snapshot, "purchases", "K"), features_of(snapshot, "purchases", "P")
    # then they are worth 120 and 0 (not -40): 60 on average; the first day's refund is not a repeat's
    assert k["repeat_purchase_day_value"] == 60.0
    # P's refund before its first purchase day has no day to reduce: its one repeat day is worth 200
    assert (p["purchase_days_lifetime"], p["repeat_purchase_day_value"]) == (2, 200.0)


def test_repeat_purchase_day_value_is_zero_without_a_repeat_day(settings: Settings) -> None:
    snapshot = build(write_lake(settings, **btyd_rows()))
    assert [features_of(snapshot, "purchases", name)["repeat_purchase_day_value"] for name in "LMN"] == [0, 0, 0]


def test_summary_from_the_features_is_rfm_summary_of_the_orders(settings: Settings) -> None:
    # given the snapshot of the BTYD lake, read as the batch job reads it
    build(write_lake(settings, **btyd_rows()))
    snapshot = load_packed_snapshot(settings, CUTOFF)
    frame = snapshot_features_frame(snapshot, BTYD_SUMMARY_FEATURES, cutoff_instant(CUTOFF))
    # when
    from_features = rfm_summary_from_features(frame)
    # then it is what the baselines compute from the orders, customer for customer
    orders = pd.read_parquet(settings.lake_dir / "orders.parquet")
    from_orders = rfm_summary(orders, pd.Timestamp(cutoff_instant(CUTOFF)), population=from_features.index)
    pd.testing.assert_frame_equal(from_features, from_orders)
    assert from_features.loc["K"].to_dict() == {"frequency": 2, "recency": 131.0, "T": 173.0, "monetary_value": 60.0}
    assert (from_features.loc[["M", "N"]] == 0).all(axis=None)  # never completed an order: all zeros


def test_summary_read_later_has_t_grown_by_the_days_since_the_snapshot(settings: Settings) -> None:
    # given the snapshot read at its cutoff and ten days later
    build(write_lake(settings, **btyd_rows()))
    snapshot = load_packed_snapshot(settings, CUTOFF)
    frames = [
        snapshot_features_frame(snapshot, BTYD_SUMMARY_FEATURES, cutoff_instant(CUTOFF) + timedelta(days=days))
        for days in (0, 10)
    ]

    # when
    at_cutoff, later = (rfm_summary_from_features(frame) for frame in frames)
    # then the buyers' T is ten days larger (never-buyers stay at 0), and nothing else moved
    assert list(later["T"] - at_cutoff["T"]) == [10.0 if name in "KLP" else 0.0 for name in at_cutoff.index]
    pd.testing.assert_frame_equal(later.drop(columns="T"), at_cutoff.drop(columns="T"))


# ---------------------------------------------------------------- engagement


def engagement_rows() -> dict[str, Rows]:
    return dict(
        customers=[customer("A"), customer("B")],
        orders=[],
        engagement_events=[
            event("A", "2024-01-01 10:00", "session_start", "old", page_views=9),  # before the 90 days
            # s1: cart and checkout; s2: bounced; s3: cart abandoned; s4: two adds, abandoned
            event("A", "2024-06-15 10:00", "session_start", "s1", page_views=5),
            event("A", "2024-06-15 10:01", "page_view", "s1"),
            event("A", "2024-06-15 10:02", "add_to_cart", "s1"),
            event("A", "2024-06-15 10:05", "checkout_start", "s1"),
            event("A", "2024-05-10 10:00", "session_start", "s2", page_views=1),
            event("A", "2024-05-10 10:00", "bounce", "s2"),
            event("A", "2024-04-10 10:00", "session_start", "s3", page_views=3),
            event("A", "2024-04-10 10:02", "add_to_cart", "s3"),
            event("A", "2024-06-20 10:00", "app_open", "s4"),
            event("A", "2024-06-20 10:00", "session_start", "s4", page_views=2),
            event("A", "2024-06-20 10:02", "add_to_cart", "s4"),
            event("A", "2024-06-20 10:03", "add_to_cart", "s4"),
            # s5: carted before the 90 days, checkout inside them: not a cart of the window
            event("A", "2024-03-20 10:00", "add_to_cart", "s5"),
            event("A", "2024-04-03 10:00", "checkout_start", "s5"),
            event("A", "2024-05-01 10:00", "app_open"),
            event("A", "2024-06-01 10:00", "social_share"),
            event("A", "2024-05-02 10:00", "email_unsubscribe"),
            # email: 4 sent in 90 days (2 in 30), 3 opened (2 in 30), 1 click
            event("A", "2024-04-05 09:00", "email_sent"),
            event("A", "2024-05-05 09:00", "email_sent"),
            event("A", "2024-05-05 12:00", "email_open"),
            event("A", "2024-06-05 09:00", "email_sent"),
            event("A", "2024-06-05 12:00", "email_open"),
            event("A", "2024-06-05 12:05", "email_click"),
            event("A", "2024-06-25 09:00", "email_sent"),
            event("A", "2024-06-25 12:00", "email_open"),
            event("A", "2024-06-10 11:00", "sms_sent"),
            event("A", "2024-06-10 11:01", "sms_delivered"),
            event("A", "2024-06-12 11:00", "sms_sent"),
            event("A", "2024-06-12 11:01", "sms_failed"),
            # sent to A, not done by A: not engagement
            event("A", "2024-06-30 09:00", "email_sent"),
            event("A", "2024-06-29 11:00", "sms_sent"),
            event("A", "2024-06-29 11:01", "sms_delivered"),
        ],
    )


def engagement_lake(settings: Settings) -> Settings:
    return write_lake(settings, **engagement_rows())


def test_engagement_counts_follow_the_windows(settings: Settings) -> None:
    snapshot = build(engagement_lake(settings))
    a = features_of(snapshot, "engagement", "A")
    assert (a["sessions_30d"], a["sessions_90d"]) == (2, 4)
    # page views: the page_view event plus the counts the session starts carry
    assert (a["page_views_30d"], a["page_views_90d"]) == (1 + 5 + 2, 1 + 5 + 1 + 3 + 2)
    assert (a["add_to_cart_30d"], a["add_to_cart_90d"]) == (3, 4)
    assert (a["app_opens_30d"], a["app_opens_90d"]) == (1, 2)
    assert (a["social_shares_90d"], a["referrals_90d"]) == (1, 0)
    assert (a["email_unsubscribes_90d"], a["email_spam_reports_90d"]) == (1, 0)


def test_bounce_and_cart_abandonment_rates(settings: Settings) -> None:
    # given 4 sessions in 90 days, one bounced; 3 sessions with a cart, one of them checked out
    snapshot = build(engagement_lake(settings))
    a = features_of(snapshot, "engagement", "A")
    # then
    assert a["bounce_rate_90d"] == pytest.approx(1 / 4)
    assert a["cart_abandonment_rate_90d"] == pytest.approx(2 / 3)


def test_email_open_click_and_sms_delivery_rates(settings: Settings) -> None:
    snapshot = build(engagement_lake(settings))
    a = features_of(snapshot, "engagement", "A")
    assert (a["email_open_rate_30d"], a["email_open_rate_90d"]) == (pytest.approx(2 / 3), pytest.approx(3 / 5))
    assert (a["email_click_rate_30d"], a["email_click_rate_90d"]) == (pytest.approx(1 / 3), pytest.approx(1 / 5))
    assert a["sms_delivery_rate_90d"] == pytest.approx(2 / 3)


def test_last_engagement_is_the_customers_own_latest_action(settings: Settings) -> None:
    # given an email sent on 2024-06-30 and an SMS sent and delivered on 06-29, after A's last own action
    snapshot = build(engagement_lake(settings))
    # then the sends do not count: the last engagement is the open of 2024-06-25 12:00
    assert features_of(snapshot, "engagement", "A")["last_engagement_at"] == at("2024-06-25 12:00")


def test_customer_without_events_has_zero_counts(settings: Settings) -> None:
    snapshot = build(engagement_lake(settings))
    b = features_of(snapshot, "engagement", "B")
    counts = [feature.name for feature in family_features("engagement") if feature.kind == "count"]
    others = [feature.name for feature in family_features("engagement") if feature.kind != "count"]
    assert counts and others
    assert {name: b[name] for name in counts} == dict.fromkeys(counts, 0)
    assert {name: b[name] for name in others} == dict.fromkeys(others)


# ---------------------------------------------------------------- voice and support


def voice_and_support_rows() -> dict[str, Rows]:
    return dict(
        customers=[customer("A"), customer("B"), customer("C")],
        orders=[],
        surveys=[
            survey("A", "2024-01-10 09:00", "nps", 6),
            survey("A", "2024-06-01 09:00", "nps", 9),
            survey("A", "2024-03-01 09:00", "csat", 4),
            survey("A", "2024-06-10 09:00", "csat", 2),
            survey("A", "2023-01-01 09:00", "csat", 5),  # before the 365 days
            # B: two NPS answers at the same instant; the later response id wins
            survey("B", "2024-05-01 09:00", "nps", 7, response_id="R-b1"),
            survey("B", "2024-05-01 09:00", "nps", 3, response_id="R-b2"),
        ],
        tickets=[
            ticket("A", "2024-06-01 00:00", "2024-06-01 02:00", "2024-06-02 00:00"),
            ticket("A", "2024-06-20 00:00", "2024-06-20 06:00"),  # still open
            # opened before the 365 days, resolved inside them: resolution counts, response does not
            ticket("A", "2023-06-01 00:00", "2023-06-01 01:00", "2023-07-10 00:00"),
        ],
    )


def voice_and_support_lake(settings: Settings) -> Settings:
    return write_lake(settings, **voice_and_support_rows())


def test_last_nps_category_and_mean_csat(settings: Settings) -> None:
    snapshot = build(voice_and_support_lake(settings))
    a, b = features_of(snapshot, "voice", "A"), features_of(snapshot, "voice", "B")
    assert (a["last_nps"], a["last_nps_category"]) == (9, "promoter")
    assert a["mean_csat_365d"] == pytest.approx(3.0)
    assert a["survey_responses"] == 5
    assert a["last_survey_at"] == at("2024-06-10 09:00")
    assert (b["last_nps"], b["last_nps_category"]) == (3, "detractor")
    assert b["mean_csat_365d"] is None


def test_customer_without_surveys_or_tickets(settings: Settings) -> None:
    snapshot = build(voice_and_support_lake(settings))
    voice, support = features_of(snapshot, "voice", "C"), features_of(snapshot, "support", "C")
    assert voice["survey_responses"] == 0
    assert voice["last_nps"] is None and voice["last_nps_category"] is None and voice["last_survey_at"] is None
    assert (support["tickets_90d"], support["tickets_365d"], support["open_tickets"]) == (0, 0, 0)
    assert support["mean_first_response_hours_365d"] is None
    assert support["max_resolution_hours_365d"] is None


def test_first_response_and_resolution_hours_and_open_tickets(settings: Settings) -> None:
    snapshot = build(voice_and_support_lake(settings))
    a = features_of(snapshot, "support", "A")
    assert (a["tickets_90d"], a["tickets_365d"], a["open_tickets"]) == (2, 2, 1)
    assert (a["mean_first_response_hours_365d"], a["max_first_response_hours_365d"]) == (4.0, 6.0)
    # resolved in the 365 days: 24 hours, and 39 days = 936 hours
    assert (a["mean_resolution_hours_365d"], a["max_resolution_hours_365d"]) == (480.0, 936.0)


# ---------------------------------------------------------------- profile and population


def test_profile_age_band_opt_in_and_source_systems(settings: Settings) -> None:
    write_lake(
        settings,
        customers=[
            customer("A", birth_year=1990, marketing_opt_in=True, n_source_ids=2, city="Huế",
                     acquisition_channel="facebook"),
            customer("B", birth_year=1969, marketing_opt_in=False),
            customer("C"),
            customer("D", birth_year=2000),
            customer("E", birth_year=1980),
        ],
        orders=[],
    )  # fmt: skip
    snapshot = build(settings)
    a = features_of(snapshot, "profile", "A")
    assert (a["age_band"], a["marketing_opt_in"], a["source_systems"]) == ("25-34", 1, 2)
    assert (a["city"], a["acquisition_channel"], a["signup_at"]) == ("Huế", "facebook", at("2022-01-01"))
    b, c = features_of(snapshot, "profile", "B"), features_of(snapshot, "profile", "C")
    assert (b["age_band"], b["marketing_opt_in"]) == ("55+", 0)
    assert c["age_band"] is None and c["marketing_opt_in"] is None
    assert features_of(snapshot, "profile", "D")["age_band"] == "<25"
    assert features_of(snapshot, "profile", "E")["age_band"] == "35-44"


def test_account_opened_after_the_cutoff_is_not_counted_yet(settings: Settings) -> None:
    # given A has a CRM account from 2022 and an app account opened after the cutoff
    customers = [customer("A", n_source_ids=2)]
    accounts = accounts_of(customers)
    accounts[1]["signup_at"] = at("2024-08-15 00:00")
    write_lake(settings, customers=customers, crosswalk=accounts, orders=[])
    # when the snapshot is built, then only the account open at the cutoff counts
    assert features_of(build(settings), "profile", "A")["source_systems"] == 1


def test_population_is_signed_up_or_ordered_before_the_cutoff(settings: Settings) -> None:
    # given F signs up after the cutoff but ordered before it, and G signs up after it and never ordered
    write_lake(
        settings,
        customers=[customer("A"), customer("F", "2024-08-01"), customer("G", "2024-07-01")],
        orders=[order("F", "2024-06-30 23:59", "10")],
    )
    snapshot = build(settings)
    # then F is in, without a signup date yet; G, signing up at the cutoff instant, is not
    assert list(snapshot["profile"]["customer_id"]) == ["A", "F"]
    assert features_of(snapshot, "profile", "F")["signup_at"] is None


def test_every_family_file_has_the_same_customers_once_each_and_the_exact_schema(settings: Settings) -> None:
    voice_and_support_lake(settings)
    write_lake(
        settings,
        customers=[customer(name) for name in "ZCBA"],
        orders=[],
        engagement_events=[event("A", "2024-06-01", "review")],
    )
    build_snapshots(settings, [CUTOFF])
    for family in FAMILIES:
        path = snapshot_path(settings, family, CUTOFF)
        expected = pa.schema(
            [("customer_id", pa.string()), ("event_timestamp", TS)]
            + [(feature.name, ARROW_TYPES[feature.kind]) for feature in family_features(family)]
        )
        assert pq.read_schema(path).remove_metadata() == expected, family
        table = pq.read_table(path)
        assert table.column("customer_id").to_pylist() == ["A", "B", "C", "Z"], family
        assert set(table.column("event_timestamp").to_pylist()) == {at("2024-07-01 00:00")}


def test_files_are_named_by_family_and_cutoff_without_equals_sign(settings: Settings) -> None:
    purchase_lake(settings)
    build_snapshots(settings, [CUTOFF, date(2024, 6, 1)])
    for family in FAMILIES:
        # the btyd family keeps the fit of each cutoff beside its snapshot
        fits = ["2024-06-01.json", "2024-07-01.json"] if family == "btyd" else []
        assert sorted(path.name for path in family_dir(settings, family).iterdir()) == sorted(
            [*fits, "2024-06-01.parquet", "2024-07-01.parquet"]
        )


# ---------------------------------------------------------------- no leakage


def _file_digests(settings: Settings, cutoff: date) -> dict[str, str]:
    return {
        family: hashlib.sha256(snapshot_path(settings, family, cutoff).read_bytes()).hexdigest() for family in FAMILIES
    }


def test_event_after_cutoff_never_changes_features(tmp_path: Path) -> None:
    # given a lake, and the same lake plus an order, events, a survey and a ticket stamped at or
    # after the cutoff, and a first response and resolutions (of tickets opened before) at it
    def lake(data_dir: Path, later: bool) -> Settings:
        tables = {
            **voice_and_support_rows(),
            "orders": purchase_rows()["orders"],
            "engagement_events": engagement_rows()["engagement_events"],
        }
        tables["tickets"].append(ticket("B", "2024-06-30 22:00"))  # not answered before the cutoff
        if later:
            tables["orders"] += [
                order("A", "2024-07-01 00:00", "999"),
                order("C", "2024-07-02 00:00", "5", status="returned"),
            ]
            tables["engagement_events"] += [
                event("A", "2024-07-01 00:00", "session_start", "s9", page_views=3),
                event("B", "2024-07-01 00:00", "email_open"),
            ]
            tables["surveys"].append(survey("A", "2024-07-01 00:00", "nps", 0, response_id="R-late"))
            tables["tickets"][-1] = ticket("B", "2024-06-30 22:00", "2024-07-01 00:00", "2024-07-01 00:00")
            tables["tickets"][1] = ticket("A", "2024-06-20 00:00", "2024-06-20 06:00", "2024-07-01 00:00")
            tables["tickets"].append(ticket("A", "2024-07-01 00:00", "2024-07-01 01:00", "2024-07-02 00:00"))
        return write_lake(Settings(data_dir=data_dir), **tables)  # fmt: skip

    before, after = lake(tmp_path / "before", later=False), lake(tmp_path / "after", later=True)
    # when
    build_snapshots(before, [CUTOFF])
    build_snapshots(after, [CUTOFF])
    # then every family file of the cutoff is byte-identical
    assert _file_digests(before, CUTOFF) == _file_digests(after, CUTOFF)
    # and the later rows do count at a later cutoff
    build_snapshots(after, [date(2024, 7, 3)])
    later = pd.read_parquet(snapshot_path(after, "voice", date(2024, 7, 3))).set_index("customer_id")
    assert later.loc["A", "last_nps"] == 0


def test_response_after_cutoff_keeps_the_ticket_open_and_out_of_response_times(settings: Settings) -> None:
    # given a ticket opened before the cutoff, answered and resolved only after it
    write_lake(
        settings,
        customers=[customer("A")],
        orders=[],
        tickets=[ticket("A", "2024-06-30 00:00", "2024-07-01 00:00", "2024-07-02 00:00")],
    )
    a = features_of(build(settings), "support", "A")
    # then at the cutoff it is open and has no response time yet
    assert a["open_tickets"] == 1
    assert a["mean_first_response_hours_365d"] is None
    assert a["max_resolution_hours_365d"] is None


# ---------------------------------------------------------------- absent tables and the report


def test_lake_of_customers_and_orders_only_builds_with_null_families(settings: Settings) -> None:
    # given no surveys, tickets or engagement events in the lake
    purchase_lake(settings)
    # when
    report = build_snapshots(settings, [CUTOFF])
    # then those families are all NULL for everyone, and reported absent
    assert report.absent_tables == ("engagement_events", "surveys", "tickets")
    assert report.null_families == ("engagement", "voice", "support")
    for family in report.null_families:
        frame = pd.read_parquet(snapshot_path(settings, family, CUTOFF))
        assert list(frame["customer_id"]) == ["A", "B", "C"]
        assert frame.drop(columns=["customer_id", "event_timestamp"]).isna().all().all(), family
    assert features_of(build(settings), "purchases", "A")["orders_lifetime"] == 4


def test_report_counts_customers_and_renders_where_files_are(settings: Settings) -> None:
    purchase_lake(settings)
    report = build_snapshots(settings, [CUTOFF, date(2023, 1, 1)])
    assert report.cutoffs == (date(2023, 1, 1), CUTOFF)
    assert report.customers == {date(2023, 1, 1): 3, CUTOFF: 3}
    console = Console(record=True, width=200)
    console.print(report.render())
    text = console.export_text()
    assert "2024-07-01" in text and str(settings.features_dir) in text
    assert "voice: all NULL, the lake has no surveys table" in text


def test_rebuilding_a_cutoff_replaces_its_files_and_leaves_no_temporary_file(settings: Settings) -> None:
    purchase_lake(settings)
    build_snapshots(settings, [CUTOFF])
    write_lake(settings, customers=[customer("A")], orders=[order("A", "2024-06-30 00:00", "5")])
    build_snapshots(settings, [CUTOFF], console=Console(quiet=True))
    frame = pd.read_parquet(snapshot_path(settings, "purchases", CUTOFF))
    assert list(frame["customer_id"]) == ["A"] and frame["orders_lifetime"].tolist() == [1]
    leftovers = [path for path in settings.data_dir.rglob("*") if path.name.startswith(".")]
    assert leftovers == []


def test_failed_rebuild_leaves_the_previous_files_of_the_cutoff_whole(settings: Settings) -> None:
    # given a built cutoff, then an engagement table that cannot be read
    engagement_lake(settings)
    build_snapshots(settings, [CUTOFF])
    before = _file_digests(settings, CUTOFF)
    (settings.lake_dir / "engagement_events.parquet").write_bytes(b"not parquet")
    write_lake(settings, customers=[customer("A")], orders=[order("A", "2024-06-30 00:00", "5")])
    # when the rebuild fails
    with pytest.raises(CustlensError, match=r"engagement features at 2024-07-01 .* left as they were"):
        build_snapshots(settings, [CUTOFF])
    # then no file of the cutoff changed (purchases was computed first) and nothing is left behind
    assert _file_digests(settings, CUTOFF) == before
    assert [path for path in settings.data_dir.rglob("*") if path.name.startswith(".")] == []


def test_progress_shows_one_line_per_cutoff(settings: Settings) -> None:
    purchase_lake(settings)
    console = Console(record=True, width=200)
    build_snapshots(settings, [CUTOFF, date(2024, 6, 1)], console=console)
    lines = [line for line in console.export_text().splitlines() if line.startswith("✓")]
    assert [line.split(" (")[0] for line in lines] == ["✓ 2024-06-01: 3 customers", "✓ 2024-07-01: 3 customers"]


def test_missing_orders_table_is_a_clear_error(settings: Settings) -> None:
    write_lake(settings, customers=[customer("A")])
    with pytest.raises(CustlensError, match=r"no orders\.parquet; run `custlens ingest` first"):
        build_snapshots(settings, [CUTOFF])


# ---------------------------------------------------------------- default cutoffs


def with_features(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"features": settings.features.model_copy(update=changes)})


def test_default_cutoffs_are_month_starts_over_the_order_history_plus_the_as_of(settings: Settings) -> None:
    # given orders from 2024-01-15 10:00 to 2024-04-10 18:00
    write_lake(
        settings,
        customers=[customer("A")],
        orders=[order("A", "2024-01-15 10:00", "1"), order("A", "2024-04-10 18:00", "1")],
    )
    settings = with_features(settings, cutoff_every="month")
    # then month starts after the first order, up to the day after the last, and the as-of: the
    # end of the data when it is old (never the wall-clock day) ...
    stale = live_as_of(settings, now=datetime(2024, 6, 5, 9, tzinfo=UTC))
    assert default_cutoffs(settings, stale) == [date(2024, 2, 1), date(2024, 3, 1), date(2024, 4, 1), date(2024, 4, 11)]
    # ... today when it is fresh
    fresh = live_as_of(settings, now=datetime(2024, 4, 12, 9, tzinfo=UTC))
    assert default_cutoffs(settings, fresh)[-2:] == [date(2024, 4, 1), date(2024, 4, 12)]
    capped = with_features(settings, max_cutoffs=2)
    assert default_cutoffs(capped, stale) == [date(2024, 3, 1), date(2024, 4, 1), date(2024, 4, 11)]


def test_the_auto_grid_is_mondays_for_a_short_history_and_month_starts_for_a_long_one(settings: Settings) -> None:
    # given 3 months of orders: the auto grid is weekly, with the weekly defaults of the counts
    write_lake(settings, customers=[customer("A")],
               orders=[order("A", "2024-01-15 10:00", "1"), order("A", "2024-04-10 18:00", "1")])  # fmt: skip
    stale = live_as_of(settings, now=datetime(2024, 6, 5, 9, tzinfo=UTC))
    assert settings.features.cutoff_every == "auto" and grid_every(settings) == "week"
    assert default_cutoffs(settings, stale)[:2] == [date(2024, 1, 22), date(2024, 1, 29)]
    assert grid_counts(settings) == GRID_COUNTS["week"]
    # two years of orders or more: month starts; a fixed grid and fixed counts are kept
    write_lake(settings, customers=[customer("A")],
               orders=[order("A", "2022-01-15 10:00", "1"), order("A", "2024-04-10 18:00", "1")])  # fmt: skip
    assert grid_every(settings) == "month" and grid_counts(settings) == GRID_COUNTS["month"]
    weekly = with_features(settings, cutoff_every="week", max_cutoffs=10)
    assert grid_every(weekly) == "week" and grid_counts(weekly).kept == 10


def test_default_weekly_cutoffs_are_mondays_strictly_after_the_first_order(settings: Settings) -> None:
    # given a first order at Monday 2024-01-01 00:00 and a last on Sunday 2024-01-21
    write_lake(
        settings,
        customers=[customer("A")],
        orders=[order("A", "2024-01-01 00:00", "1"), order("A", "2024-01-21 10:00", "1")],
    )
    weekly = with_features(settings, cutoff_every="week")
    # then that Monday is not a cutoff (nothing before it), the Monday after the last order day is
    # (and it is the as-of, the end of the data)
    assert default_cutoffs(weekly) == [date(2024, 1, 8), date(2024, 1, 15), date(2024, 1, 22)]


def test_default_cutoffs_of_a_lake_without_orders_is_just_the_as_of(settings: Settings) -> None:
    write_lake(settings, customers=[customer("A", signup="2024-06-04 08:00")], orders=[])
    assert default_cutoffs(settings) == [date(2024, 6, 5)]
