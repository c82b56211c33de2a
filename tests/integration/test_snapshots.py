"""Feature snapshots of a few hundred generated, ingested customers: every family has the same
customers once each, counts are never NULL, shares stay in [0, 1], nothing is from at or after the
cutoff, and totals agree with the lake. (The hand-computed values are in tests/unit/test_snapshots.py.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr

from custlens.settings import Settings
from features.catalog import FAMILIES, family_features
from features.lake.ingest import ingest
from features.lake.tables import cutoff_instant, table_path
from features.sample.generate import DEFAULT_END, generate
from features.snapshots import build_snapshots, default_cutoffs, snapshot_path
from tests.support.business import SAMPLE_BUSINESS


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
