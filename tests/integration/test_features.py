"""The feature store end to end on a few thousand generated customers:
generate -> ingest -> features build -> apply -> materialize -> training frames and online reads,
and the BTYD summary the baselines read from them."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from custlens.cli import app
from custlens.settings import Settings, load_settings
from features import layout
from features.catalog import BTYD_SUMMARY_FEATURES, PACKED_NUMBERS, RECENCY_FEATURES, family_features
from features.lake.ingest import ingest
from features.lake.tables import cutoff_instant
from features.model_inputs import service_spec
from features.online import OnlineFeatures, materialize
from features.sample.generate import DEFAULT_END, generate
from features.snapshot_reader import load_packed_snapshot, snapshot_cutoffs, snapshot_features_frame
from features.snapshots import build_snapshots, default_cutoffs, snapshot_path
from features.store import apply_definitions, entity_rows, training_frame
from tests.support.business import SAMPLE_CONFIG
from training.baselines.btyd import rfm_summary_from_features

CUSTOMERS = 2_000
TODAY = DEFAULT_END + timedelta(days=1)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("data")
    settings = load_settings(SAMPLE_CONFIG).model_copy(
        update={"data_dir": data_dir, "pii_salt": SecretStr("test-salt")}
    )
    generate(
        out_dir=settings.sample_dir, customers=CUSTOMERS, seed=5, start=None, end=DEFAULT_END,
        dirty_rate=0.01, file_format="parquet",
    )  # fmt: skip
    ingest(settings, settings.sample_dir)
    cutoffs = default_cutoffs(settings)[-4:]
    build_snapshots(settings, cutoffs)
    apply_definitions(settings)
    materialize(settings)
    return settings


def test_online_store_serves_the_latest_built_snapshot(settings: Settings) -> None:
    snapshot = load_packed_snapshot(settings)
    ids = snapshot.customer_ids[:: max(1, len(snapshot) // 200)]

    rows = OnlineFeatures(settings).read(ids)

    assert rows.known.all()
    expected = snapshot.take(np.array([snapshot.customer_ids.index(i) for i in ids]))
    np.testing.assert_array_equal(rows.numbers, expected.numbers)
    assert [[label or "" for label in row] for row in rows.labels] == expected.labels


def test_training_frame_equals_the_snapshot_files_at_each_cutoff(settings: Settings) -> None:
    snapshot = load_packed_snapshot(settings)
    cutoffs = sorted({snapshot.cutoff, date(snapshot.cutoff.year, snapshot.cutoff.month, 1)})
    ids = snapshot.customer_ids[:50]

    frame = training_frame(settings, entity_rows(ids, cutoffs), "churn_v1")

    assert len(frame) == len(ids) * len(cutoffs)
    compared = 0
    for cutoff in cutoffs:
        packed = load_packed_snapshot(settings, cutoff)
        position = {customer_id: i for i, customer_id in enumerate(packed.customer_ids)}
        at_cutoff = frame[frame["cutoff"] == cutoff_instant(cutoff)]
        assert len(at_cutoff) == len(ids), cutoff
        for _, row in at_cutoff.iterrows():
            if row["customer_id"] not in position:
                assert pd.isna(row["orders_lifetime"])  # not yet a customer then: NULL, not 0
                continue
            packed_orders = packed.numbers[position[row["customer_id"]], PACKED_NUMBERS.index("orders_lifetime")]
            assert row["orders_lifetime"] == packed_orders
            compared += 1
    assert compared >= len(ids)  # the latest snapshot knows every id; the month start most of them


def test_feature_values_carry_signal_not_constants(settings: Settings) -> None:
    snapshot = load_packed_snapshot(settings)

    numbers = pd.DataFrame(snapshot.numbers, columns=list(PACKED_NUMBERS))

    varying = numbers.nunique(dropna=True)
    assert (varying > 1).mean() > 0.9, varying[varying <= 1]


def test_cli_online_prints_a_customer_with_day_counts(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTLENS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("COLUMNS", "200")

    result = CliRunner().invoke(app, ["features", "online"])

    assert result.exit_code == 0, result.output
    day_counts = [name for name in service_spec("churn").inputs.names if name in RECENCY_FEATURES]
    assert "days_since_last_order" in day_counts
    for name in day_counts:  # the day counts the churn service reads, shown by default
        assert name in result.output


def test_online_btyd_summary_is_the_snapshots_and_its_t_grows_with_the_request(settings: Settings) -> None:
    # given the materialized latest snapshot, read online at its instant and ten days later
    snapshot = load_packed_snapshot(settings)
    at_snapshot = cutoff_instant(snapshot.cutoff)
    ids = snapshot.customer_ids[::5]
    batch = rfm_summary_from_features(snapshot_features_frame(snapshot, BTYD_SUMMARY_FEATURES, at_snapshot))
    # the generated data ended a month before today: make it fresh, so that day counts go to the request
    fresh = settings.model_copy(update={"features": settings.features.model_copy(update={"fresh_within_days": 3650})})
    online = OnlineFeatures(fresh)
    # when
    then, later = (
        rfm_summary_from_features(
            online.features_columns(ids, BTYD_SUMMARY_FEATURES, at_snapshot + timedelta(days=days))
        )
        for days in (0, 10)
    )
    # then online at the snapshot's instant is the batch summary, and ten days later T is exactly 10 larger
    pd.testing.assert_frame_equal(then, batch.loc[ids], check_exact=True)
    bought = (then["T"] > 0).to_numpy()
    assert bought.sum() > len(ids) / 2
    np.testing.assert_array_equal((later["T"] - then["T"]).to_numpy(), np.where(bought, 10.0, 0.0))
    pd.testing.assert_frame_equal(later.drop(columns="T"), then.drop(columns="T"), check_exact=True)
    # while stale data is answered as of its end: the same T, whatever the request's time
    stale = rfm_summary_from_features(
        OnlineFeatures(settings).features_columns(ids, BTYD_SUMMARY_FEATURES, at_snapshot + timedelta(days=10))
    )
    pd.testing.assert_frame_equal(stale, then, check_exact=True)


def test_every_snapshot_has_the_btyd_family_and_its_fit(settings: Settings) -> None:
    # given the four built cutoffs
    for cutoff in snapshot_cutoffs(settings):
        # then each has the btyd family for every customer of the cutoff, from a fit beside it
        family = pd.read_parquet(snapshot_path(settings, "btyd", cutoff))
        profile = pd.read_parquet(snapshot_path(settings, "profile", cutoff), columns=["customer_id"])
        assert family["customer_id"].tolist() == profile["customer_id"].tolist()
        fit = json.loads(layout.btyd_fit_file(cutoff, settings.data_dir).read_text())
        assert fit["unfitted"] == [] and set(fit["bgnbd"]) == {"r", "alpha", "a", "b"}
        buyers = family["btyd_expected_order_value"].notna()
        assert buyers.all() and family["btyd_prob_alive"].between(0, 1).all()


def test_online_btyd_family_equals_the_offline_frame_of_the_same_snapshot(settings: Settings) -> None:
    # given the materialized latest snapshot
    snapshot = load_packed_snapshot(settings)
    at_snapshot = cutoff_instant(snapshot.cutoff)
    ids = snapshot.customer_ids[::7]
    names = [f.name for f in family_features("btyd")]
    # when the family is read online, from the offline store's point-in-time join, and from the file
    online = OnlineFeatures(settings).frame(ids, "churn_v2", at_snapshot).set_index("customer_id")[names]
    offline = training_frame(settings, entity_rows(ids, [snapshot.cutoff]), "churn_v2").set_index("customer_id")
    stored = pd.read_parquet(snapshot_path(settings, "btyd", snapshot.cutoff)).set_index("customer_id").loc[ids]
    # then all three are the same numbers
    assert online.notna().all().all()
    pd.testing.assert_frame_equal(online, stored[names], check_exact=True, check_names=False)
    pd.testing.assert_frame_equal(offline.loc[ids, names], stored[names], check_exact=True, check_names=False)
