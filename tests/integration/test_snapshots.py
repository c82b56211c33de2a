"""Feature snapshots of a few hundred generated, ingested customers: every family has the same
customers once each, counts are never NULL, shares stay in [0, 1], nothing is from at or after the
cutoff, and totals agree with the lake. (The hand-computed values are in tests/unit/test_snapshots.py.)"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from custlens.settings import Settings
from features.catalog import BTYD_SUMMARY_FEATURES, FAMILIES, family_features
from features.lake.ingest import ingest
from features.lake.tables import cutoff_instant, table_path
from features.sample.generate import DEFAULT_END, generate
from features.snapshot_reader import load_packed_snapshot, snapshot_features_frame
from features.snapshots import build_snapshots, default_cutoffs, snapshot_path
from tests.support.business import SAMPLE_BUSINESS
from training.baselines.btyd import rfm_summary, rfm_summary_from_features


def test_snapshot_of_generated_data_is_consistent_with_the_lake(tmp_path: Path) -> None:
    # given a few hundred generated customers, ingested
    settings = Settings(business=SAMPLE_BUSINESS, data_dir=tmp_path / "data", pii_salt=SecretStr("test-salt"))
    generate(out_dir=settings.sample_dir, customers=400, seed=5, start=None, end=DEFAULT_END, dirty_rate=0.0,
             file_format="parquet")  # fmt: skip
    ingest(settings, settings.sample_dir)
    periodic = settings.model_copy(update={"features": settings.features.model_copy(update={"include_today": False})})
    cutoff = default_cutoffs(periodic)[-1]
    instant = pd.Timestamp(cutoff_instant(cutoff))
    # when
    report = build_snapshots(settings, [cutoff])
    snapshot = {family: pd.read_parquet(snapshot_path(settings, family, cutoff)) for family in FAMILIES}
    # then every family has the same customers, once each, and no table is absent
    assert report.absent_tables == ()
    ids = snapshot["profile"]["customer_id"]
    assert ids.is_unique and ids.is_monotonic_increasing and len(ids) == report.customers[cutoff]
    assert all(frame["customer_id"].equals(ids) for frame in snapshot.values())
    # counts are never NULL, shares stay in [0, 1], instants are before the cutoff
    for family, frame in snapshot.items():
        for feature in family_features(family):
            values = frame[feature.name]
            if feature.kind == "count" and feature.name not in ("last_nps", "marketing_opt_in"):
                assert values.notna().all(), feature.name
            if feature.kind == "timestamp" and feature.name != "signup_at":
                assert (values.dropna() < instant).all(), feature.name
    purchases, engagement = snapshot["purchases"], snapshot["engagement"]
    for name in ("return_rate_365d", "cancellation_rate_365d", "discount_share_365d"):
        assert purchases[name].dropna().between(0, 1).all(), name
    assert engagement["cart_abandonment_rate_90d"].dropna().between(0, 1).all()
    # and totals agree with the lake
    orders = pd.read_parquet(table_path(settings, "orders"))
    completed = orders[(orders["status"] == "completed") & (orders["ordered_at"] < instant)]
    assert purchases["orders_lifetime"].sum() == len(completed) > 0
    refunds = orders[(orders["status"] == "returned") & (orders["net_amount"] < 0) & (orders["ordered_at"] < instant)]
    net_revenue = float(completed["net_amount"].astype(float).sum() + refunds["net_amount"].astype(float).sum())
    assert purchases["revenue_lifetime"].sum() == pytest.approx(net_revenue)  # net: refunds taken off
    events = pd.read_parquet(table_path(settings, "engagement_events"))
    recent = events[(events["occurred_at"] >= instant - pd.Timedelta(days=90)) & (events["occurred_at"] < instant)]
    assert engagement["sessions_90d"].sum() == (recent["event_type"] == "session_start").sum() > 0


def with_credit_notes(settings: Settings, seed: int) -> int:
    """Add credit notes to the ingested lake's orders (the generator writes none): for a fifth of
    the completed orders a refund of part of it, all of it or more, dated from 20 days before it to
    40 days after (before a first order, or into a later purchase day, too). Returns how many."""
    path = table_path(settings, "orders")
    table = pq.read_table(path)
    orders = table.to_pandas()
    rng = np.random.default_rng(seed)
    completed = orders[orders["status"] == "completed"]
    refunded = completed.sample(frac=0.2, random_state=seed).copy()
    shares = [Decimal(share) for share in rng.choice(["0.1", "0.5", "1", "1.7"], len(refunded))]
    amounts = zip(refunded["net_amount"], shares, strict=True)
    refunded["net_amount"] = [-(amount * share).quantize(Decimal("0.01")) for amount, share in amounts]
    refunded["status"] = "returned"
    refunded["ordered_at"] += pd.to_timedelta(rng.integers(-20 * 24, 40 * 24, len(refunded)), unit="h")
    refunded["order_id"] = [f"credit-{i}" for i in range(len(refunded))]
    pq.write_table(pa.Table.from_pandas(pd.concat([orders, refunded]), schema=table.schema, preserve_index=False), path)
    return len(refunded)


def test_btyd_summary_from_the_snapshot_is_rfm_summary_of_the_orders_at_each_cutoff(tmp_path: Path) -> None:
    # given a few hundred generated customers, ingested, with credit notes added, snapshot at two cutoffs
    settings = Settings(business=SAMPLE_BUSINESS, data_dir=tmp_path / "data", pii_salt=SecretStr("test-salt"))
    generate(out_dir=settings.sample_dir, customers=400, seed=7, start=None, end=DEFAULT_END, dirty_rate=0.0,
             file_format="parquet")  # fmt: skip
    ingest(settings, settings.sample_dir)
    assert with_credit_notes(settings, seed=7) > 100
    cutoffs = [date(2025, 11, 1), date(2026, 10, 1)]
    build_snapshots(settings, cutoffs)
    orders = pd.read_parquet(table_path(settings, "orders"))
    for cutoff in cutoffs:
        instant = cutoff_instant(cutoff)
        # when the summary is read from the features, as the batch job reads them
        features = snapshot_features_frame(load_packed_snapshot(settings, cutoff), BTYD_SUMMARY_FEATURES, instant)
        from_features = rfm_summary_from_features(features)
        # then it is what the baselines compute from the orders, for every customer of the snapshot
        from_orders = rfm_summary(orders, pd.Timestamp(instant), population=from_features.index)
        pd.testing.assert_frame_equal(from_features, from_orders, check_exact=False, rtol=1e-9, atol=1e-9)
        pd.testing.assert_frame_equal(from_features.drop(columns="monetary_value"),
                                      from_orders.drop(columns="monetary_value"), check_exact=True)  # fmt: skip
        # and whoever rfm_summary knows but the snapshot does not (a refund or cancellation only) is all zeros
        everyone = rfm_summary(orders, pd.Timestamp(instant))
        assert (everyone.drop(index=from_features.index, errors="ignore") == 0).all(axis=None), cutoff
        # the credit notes were netted into repeat days: without them, some customers' values differ
        without_refunds = rfm_summary(orders[orders["net_amount"] >= 0], pd.Timestamp(instant), from_features.index)
        assert (without_refunds["monetary_value"] != from_orders["monetary_value"]).sum() > 10, cutoff
        assert (from_orders["frequency"] > 0).sum() > 100, cutoff
