"""The Feast feature store: idempotent apply, point-in-time training frames, the packed online
store (SQLite and the real Redis), unknown ids, and day counts taken at request time."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from custlens.settings import FeastSettings, Settings
from features import feast_format, layout
from features.catalog import (
    BTYD_SUMMARY_FEATURES,
    PACKED_LABELS,
    PACKED_NUMBERS,
    RECENCY_FEATURES,
    STORED_FEATURES,
)
from features.catalog import feature as catalog_feature
from features.lake.tables import cutoff_instant
from features.model_inputs import service_spec
from features.online import OnlineFeatures, OnlineRows, materialize
from features.store import apply_definitions, entity_rows, feature_store, registered_services, training_frame
from tests.support.databases import skip_without_postgres
from tests.support.feature_snapshots import synthetic_values, write_snapshot

SEPTEMBER, OCTOBER = date(2026, 9, 1), date(2026, 10, 1)
CUSTOMERS = [f"C{i:04d}" for i in range(60)]
# Known, unknown (never materialized; the empty id) and repeated ids, mixed.
MIXED_IDS = [CUSTOMERS[0], "nobody", CUSTOMERS[5], CUSTOMERS[0], CUSTOMERS[59], "", CUSTOMERS[5]]
MIXED_KNOWN = [True, False, True, True, True, False, True]


def build_store(data_dir: Path, feast: FeastSettings | None = None) -> tuple[Settings, dict[date, dict[str, list]]]:
    """Two monthly snapshots of 60 customers, applied and the latest one materialized."""
    settings = Settings(data_dir=data_dir, feast=feast or FeastSettings())
    values = {}
    for seed, cutoff in enumerate((SEPTEMBER, OCTOBER)):
        values[cutoff] = synthetic_values(CUSTOMERS, cutoff, seed)
        write_snapshot(data_dir, cutoff, CUSTOMERS, values[cutoff])
    apply_definitions(settings)
    materialize(settings)
    return settings, values


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[date, dict[str, list]]]:
    return build_store(tmp_path_factory.mktemp("feast"))


def feasts_own_read(settings: Settings, ids: list[str]) -> OnlineRows:
    """The same ids read by Feast's own `online_store.online_read`, put in OnlineRows' terms."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = feature_store(settings)
    keys = [EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=i)]) for i in ids]
    answers = store._get_provider().online_store.online_read(
        store.config, store.get_feature_view("customer_vector"), keys
    )
    known: list[bool] = []
    numbers: list[list[float]] = []
    labels: list[list[str | None]] = []
    stamps: list[datetime | None] = []
    for stamp, values in answers:
        # SQLite answers (None, None) for an unknown id; Redis an empty Value and the epoch.
        if values is None or not values["numbers"].HasField("double_list_val"):
            known.append(False)
            numbers.append([math.nan] * len(PACKED_NUMBERS))
            labels.append([None] * len(PACKED_LABELS))
            stamps.append(None)
            continue
        if stamp is not None and settings.feast.online_store == "sqlite":
            # Feast's SQLite reader turns stored epoch seconds into local wall time labelled UTC.
            stamp = stamp.replace(tzinfo=None).astimezone(UTC)
        known.append(True)
        numbers.append(list(values["numbers"].double_list_val.val))
        labels.append([label or None for label in values["labels"].string_list_val.val])
        stamps.append(stamp)
    return OnlineRows(ids, np.array(known), stamps, np.array(numbers), labels)


def assert_same_rows(ours: OnlineRows, theirs: OnlineRows) -> None:
    assert ours.customer_ids == theirs.customer_ids
    np.testing.assert_array_equal(ours.known, theirs.known)
    np.testing.assert_array_equal(ours.numbers, theirs.numbers)  # NaN where NaN, bit for bit elsewhere
    assert ours.labels == theirs.labels
    assert ours.feature_time == theirs.feature_time


@pytest.fixture(params=["UTC", "ICT-7"])
def local_timezone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local time zone: UTC, then Indochina time (POSIX spelling, no tzdata needed)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def same(a: object, b: object) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NaT
    if hasattr(a, "timestamp") and hasattr(b, "timestamp"):
        return abs(a.timestamp() - b.timestamp()) < 1e-3
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-12)  # type: ignore[arg-type]
    return a == b


# -- apply ---------------------------------------------------------------------------------------


def test_reapplying_unchanged_definitions_changes_nothing(tmp_path: Path) -> None:
    settings, _ = build_store(tmp_path)  # applied once, then materialized (which touches source meta)
    registry = settings.feast_dir / "registry.db"
    before = registry.read_bytes()

    result = apply_definitions(settings)

    assert result.changes == ()
    assert registry.read_bytes() == before


def test_first_apply_registers_every_view_and_service(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    result = apply_definitions(settings)

    store = feature_store(settings)
    assert {view.name for view in store.list_feature_views()} >= {
        "purchases", "engagement", "voice", "support", "profile", "customer_vector",
    }
    assert {s.name for s in store.list_feature_services()} == {
        "churn_v1", "repurchase_v1", "clv_v1", "segments_v1", "baselines_v1", "churn_v2", "repurchase_v2", "clv_v2",
    }
    assert any("customer_vector" in change for change in result.changes)


# -- offline: point-in-time training frames -------------------------------------------------------


def test_training_frame_takes_each_rows_snapshot_at_its_cutoff(sqlite_store: tuple) -> None:
    settings, values = sqlite_store
    entities = entity_rows(CUSTOMERS[:5], [SEPTEMBER, OCTOBER])

    frame = training_frame(settings, entities, service_spec("churn").service)

    assert list(frame["customer_id"]) == list(entities["customer_id"])
    # what the service serves, and the instants its day counts are taken from
    compared = [feature.name for feature in STORED_FEATURES if feature.name in frame.columns]
    assert set(compared) >= set(service_spec("churn").inputs.names) - set(RECENCY_FEATURES)
    for _, row in frame.iterrows():
        cutoff = row["cutoff"].date()
        position = CUSTOMERS.index(row["customer_id"])
        for name in compared:
            assert same(values[cutoff][name][position], row[name]), name


def test_training_frame_between_snapshots_sees_the_earlier_one_only(sqlite_store: tuple) -> None:
    settings, values = sqlite_store
    mid_october = pd.DataFrame({"customer_id": [CUSTOMERS[0]], "cutoff": [cutoff_instant(date(2026, 9, 20))]})

    frame = training_frame(settings, mid_october, "clv_v1")

    assert same(values[SEPTEMBER]["revenue_365d"][0], frame.loc[0, "revenue_365d"])


def test_training_frame_of_unknown_customer_is_null_not_zero(sqlite_store: tuple) -> None:
    settings, _ = sqlite_store

    frame = training_frame(settings, entity_rows(["nobody"], [OCTOBER]), "churn_v1")

    assert frame.drop(columns=["customer_id", "cutoff"]).isna().all(axis=None)


def test_training_frame_day_counts_are_taken_at_the_cutoff(sqlite_store: tuple) -> None:
    settings, values = sqlite_store

    frame = training_frame(settings, entity_rows([CUSTOMERS[1]], [OCTOBER]), "churn_v1")

    last_order = values[OCTOBER]["last_order_at"][1]
    expected = (cutoff_instant(OCTOBER) - last_order).total_seconds() / 86400 if last_order else None
    assert same(expected, frame.loc[0, "days_since_last_order"])


def test_a_service_gets_its_day_counts_without_serving_their_instants(sqlite_store: tuple) -> None:
    # Feast fetches an on-demand view's sources itself, so no model's service lists raw instants.
    settings, values = sqlite_store
    served = OnlineFeatures(settings).service_features("segments_v1")

    frame = training_frame(settings, entity_rows([CUSTOMERS[1]], [OCTOBER]), "segments_v1")

    assert "days_since_last_order" in served and "last_order_at" not in served
    last_order = values[OCTOBER]["last_order_at"][1]
    expected = (cutoff_instant(OCTOBER) - last_order).total_seconds() / 86400 if last_order else None
    assert same(expected, frame.loc[0, "days_since_last_order"])


def test_registered_services_say_what_each_serves(sqlite_store: tuple, tmp_path: Path) -> None:
    settings, _ = sqlite_store
    never_applied = Settings(data_dir=tmp_path)

    served = registered_services(settings)

    assert served["segments_v1"] == OnlineFeatures(settings).service_features("segments_v1")
    assert registered_services(never_applied) == {}
    assert not (tmp_path / "feast" / "registry.db").exists()  # asking made no registry


# -- online ---------------------------------------------------------------------------------------


def test_online_read_returns_exactly_the_latest_snapshot(sqlite_store: tuple) -> None:
    settings, values = sqlite_store
    online = OnlineFeatures(settings)

    rows = online.read(CUSTOMERS)

    assert rows.known.all()
    for i in range(len(CUSTOMERS)):
        for feature in STORED_FEATURES:
            assert same(values[OCTOBER][feature.name][i], rows.value(i, feature.name)), feature.name
    assert {stamp for stamp in rows.feature_time} == {cutoff_instant(OCTOBER)}


def test_unknown_id_comes_back_unknown_without_values(sqlite_store: tuple) -> None:
    settings, _ = sqlite_store

    frame = OnlineFeatures(settings).frame(["nobody", CUSTOMERS[0]], "churn_v1")

    assert list(frame["known"]) == [False, True]
    assert frame.iloc[0].drop(["customer_id", "known"]).isna().all()


def test_bulk_reader_agrees_with_feasts_online_read_on_sqlite(sqlite_store: tuple, local_timezone: str) -> None:
    settings, _ = sqlite_store

    ours = OnlineFeatures(settings).read(MIXED_IDS)

    assert list(ours.known) == MIXED_KNOWN
    assert_same_rows(ours, feasts_own_read(settings, MIXED_IDS))
    assert set(ours.feature_time) == {cutoff_instant(OCTOBER), None}


def test_a_read_larger_than_one_select_keeps_every_id_in_order(sqlite_store: tuple) -> None:
    settings, _ = sqlite_store
    ids = [*CUSTOMERS[:30], *(f"nobody-{i}" for i in range(12_000)), *CUSTOMERS[30:]]

    rows = OnlineFeatures(settings).read(ids)

    assert rows.known.sum() == len(CUSTOMERS)
    assert list(np.flatnonzero(rows.known)) == [*range(30), *range(12_030, 12_060)]
    np.testing.assert_array_equal(rows.numbers[rows.known], OnlineFeatures(settings).read(CUSTOMERS).numbers)


def test_a_vector_of_another_width_reads_as_unknown(tmp_path: Path) -> None:
    settings, _ = build_store(tmp_path)
    store = feature_store(settings)
    table = feast_format.online_table(store, store.get_feature_view("customer_vector"))
    # What a materialization from before a catalog change would have left behind.
    with table.new_generation("stale", keep_current=True) as generation:
        generation.write(
            feast_format.entity_key_bytes("customer_id", ["stale"]),
            feast_format.double_list_bytes(np.ones((1, len(PACKED_NUMBERS) - 1))),
            feast_format.string_list_bytes([["x"] * len(PACKED_LABELS)]),
            int(cutoff_instant(OCTOBER).timestamp()),
        )

    rows = OnlineFeatures(settings).read(["stale", CUSTOMERS[0]])

    assert list(rows.known) == [False, True]
    assert np.isnan(rows.numbers[0]).all() and rows.labels[0] == [None] * len(PACKED_LABELS)
    assert rows.feature_time[0] is None


def test_a_long_lived_reader_sees_the_next_materialization(tmp_path: Path) -> None:
    settings, values = build_store(tmp_path)
    online = OnlineFeatures(settings)
    assert same(values[OCTOBER]["revenue_365d"][7], online.read([CUSTOMERS[7]]).value(0, "revenue_365d"))
    changed = dict(values[OCTOBER])
    changed["revenue_365d"] = list(changed["revenue_365d"])
    changed["revenue_365d"][7] = 654321.0
    write_snapshot(tmp_path, OCTOBER, CUSTOMERS, changed)

    materialize(settings)

    assert online.read([CUSTOMERS[7]]).value(0, "revenue_365d") == 654321.0


def test_online_day_counts_ten_days_after_the_snapshot_are_ten_days_larger(sqlite_store: tuple) -> None:
    settings, _ = sqlite_store
    online = OnlineFeatures(settings)
    at_snapshot = cutoff_instant(OCTOBER)

    then = online.read(CUSTOMERS, request_time=at_snapshot)
    later = online.read(CUSTOMERS, request_time=at_snapshot + timedelta(days=10))

    for stamp in RECENCY_FEATURES.values():
        difference = later.days_since(stamp) - then.days_since(stamp)
        known = ~np.isnan(then.days_since(stamp))
        assert known.any()
        np.testing.assert_allclose(difference[known], 10.0)


def test_online_and_offline_day_counts_agree_at_the_same_moment(sqlite_store: tuple) -> None:
    settings, _ = sqlite_store
    service = service_spec("churn").service
    online = OnlineFeatures(settings).frame(CUSTOMERS[:10], service, request_time=cutoff_instant(OCTOBER))

    offline = training_frame(settings, entity_rows(CUSTOMERS[:10], [OCTOBER]), service)

    day_counts = [name for name in service_spec("churn").inputs.names if name in RECENCY_FEATURES]
    assert "days_since_last_order" in day_counts
    for name in day_counts:
        np.testing.assert_allclose(online[name].astype(float), offline[name].astype(float), equal_nan=True)


def test_btyd_summary_features_are_the_same_offline_and_online_at_the_same_moment(sqlite_store: tuple) -> None:
    # given the features the BTYD baselines read, which no model's service serves yet
    settings, _ = sqlite_store
    moment = cutoff_instant(OCTOBER)
    refs = [
        f"recency:{name}" if name in RECENCY_FEATURES else f"{catalog_feature(name).family}:{name}"
        for name in BTYD_SUMMARY_FEATURES
    ]
    entities = pd.DataFrame({"customer_id": CUSTOMERS, "event_timestamp": pd.Timestamp(moment)})
    entities[layout.REQUEST_TIME] = entities["event_timestamp"]
    # when they are read from Feast's offline store (as a training frame) and from the online store
    offline = feature_store(settings).get_historical_features(entity_df=entities, features=refs).to_df()
    offline = offline.set_index("customer_id").loc[CUSTOMERS]
    online = OnlineFeatures(settings).features_frame(CUSTOMERS, BTYD_SUMMARY_FEATURES, request_time=moment)
    # then they are equal, the day count since the first purchase day included
    for name in BTYD_SUMMARY_FEATURES:
        np.testing.assert_allclose(online[name].astype(float), offline[name].astype(float), equal_nan=True, rtol=1e-12)
    assert online["days_since_first_purchase_day"].notna().sum() > len(CUSTOMERS) / 2


def test_online_frame_has_the_services_features_in_order(sqlite_store: tuple) -> None:
    settings, _ = sqlite_store
    online = OnlineFeatures(settings)

    frame = online.frame(CUSTOMERS[:2], "segments_v1")

    assert list(frame.columns[3:]) == list(online.service_features("segments_v1"))
    assert sorted(frame.columns[3:]) == sorted(service_spec("segments").inputs.names)


def test_frame_dtypes_are_the_documented_ones_whatever_the_batch(sqlite_store: tuple) -> None:
    settings, values = sqlite_store
    online = OnlineFeatures(settings)
    # Every catalog feature, instants included: no model's service serves those, the frame still can.
    kinds = {f.name: f.kind for f in STORED_FEATURES} | {name: "days" for name in RECENCY_FEATURES}
    expected = {"customer_id": "object", "known": "bool", "feature_time": "datetime64[us, UTC]"} | {
        name: {"timestamp": "datetime64[us, UTC]", "category": "object"}.get(kind, "float64")
        for name, kind in kinds.items()
    }
    # One known id (no NULL in most columns), every id and an unknown one (NULLs everywhere), unknown only.
    batches = [[CUSTOMERS[2]], [*CUSTOMERS, "nobody"], ["nobody"]]

    frames = [online.features_frame(ids, list(kinds)) for ids in batches]

    for frame in frames:
        assert {column: str(dtype) for column, dtype in frame.dtypes.items()} == expected
    every = frames[1]
    for name, kind in kinds.items():
        column = every[name]
        if kind == "days":
            continue
        stored = values[OCTOBER][name]
        assert [same(value, column[i]) for i, value in enumerate(stored)] == [True] * len(CUSTOMERS), name
        if kind == "category":
            assert column.iloc[-1] is None
        else:
            assert pd.isna(column.iloc[-1])
    assert (every["feature_time"].iloc[:-1] == pd.Timestamp(cutoff_instant(OCTOBER))).all()
    assert every["feature_time"].isna().iloc[-1]


def test_stock_feast_reads_the_packed_vector_we_wrote(sqlite_store: tuple) -> None:
    settings, values = sqlite_store
    store = feature_store(settings)

    answer = store.get_online_features(
        features=["customer_vector:numbers", "customer_vector:labels"],
        entity_rows=[{"customer_id": CUSTOMERS[3]}],
    ).to_dict()

    numbers = answer["numbers"][0]
    assert len(numbers) == len(PACKED_NUMBERS)
    assert same(values[OCTOBER]["revenue_365d"][3], numbers[PACKED_NUMBERS.index("revenue_365d")])
    assert answer["labels"][0][PACKED_LABELS.index("city")] == (values[OCTOBER]["city"][3] or "")


def test_second_materialize_of_the_same_snapshot_writes_only_changed_customers(tmp_path: Path) -> None:
    settings, values = build_store(tmp_path)
    changed = dict(values[OCTOBER])
    changed["revenue_365d"] = list(changed["revenue_365d"])
    changed["revenue_365d"][7] = 123456.0
    write_snapshot(tmp_path, OCTOBER, CUSTOMERS, changed)

    report = materialize(settings)

    assert (report.written, report.full) == (1, False)
    assert OnlineFeatures(settings).read([CUSTOMERS[7]]).value(0, "revenue_365d") == 123456.0


def test_materializing_an_older_snapshot_rewrites_everyone(tmp_path: Path) -> None:
    settings, values = build_store(tmp_path)

    report = materialize(settings, SEPTEMBER)

    assert report.written == len(CUSTOMERS)
    rows = OnlineFeatures(settings).read(CUSTOMERS[:1])
    assert rows.feature_time[0] == cutoff_instant(SEPTEMBER)
    assert same(values[SEPTEMBER]["orders_365d"][0], rows.value(0, "orders_365d"))


def test_packed_source_holds_the_materialized_snapshot(sqlite_store: tuple) -> None:
    settings, values = sqlite_store

    packed = pq.read_table(layout.packed_path(settings.data_dir.resolve())).to_pandas()

    assert list(packed["customer_id"]) == CUSTOMERS
    assert same(values[OCTOBER]["orders_90d"][5], packed.loc[5, "numbers"][PACKED_NUMBERS.index("orders_90d")])


# -- Redis: the production online store -----------------------------------------------------------


# redis_feast (tests/integration/conftest.py): Feast settings for the local Redis, skipped without one.


def test_redis_online_store_serves_the_latest_snapshot(tmp_path: Path, redis_feast: FeastSettings) -> None:
    settings, values = build_store(tmp_path, redis_feast)

    rows = OnlineFeatures(settings).read([*CUSTOMERS[:5], "nobody"])

    assert list(rows.known) == [True] * 5 + [False]
    for i in range(5):
        for name in ("orders_365d", "revenue_30d", "city", "last_order_at", "last_nps_category"):
            assert same(values[OCTOBER][name][i], rows.value(i, name)), name
    assert rows.feature_time[0] == cutoff_instant(OCTOBER)


def test_bulk_reader_agrees_with_feasts_online_read_on_redis(tmp_path: Path, redis_feast: FeastSettings) -> None:
    settings, _ = build_store(tmp_path, redis_feast)

    ours = OnlineFeatures(settings).read(MIXED_IDS)

    assert list(ours.known) == MIXED_KNOWN
    assert_same_rows(ours, feasts_own_read(settings, MIXED_IDS))
    assert set(ours.feature_time) == {cutoff_instant(OCTOBER), None}


def test_redis_store_emptied_behind_our_back_is_reloaded_in_full(tmp_path: Path, redis_feast: FeastSettings) -> None:
    import redis

    settings, _ = build_store(tmp_path, redis_feast)
    client = redis.Redis(host="127.0.0.1", port=6379)
    for key in client.scan_iter(match=f"*{redis_feast.project}".encode(), count=1000):
        client.delete(key)

    report = materialize(settings)

    assert report.full and report.written == len(CUSTOMERS)
    assert OnlineFeatures(settings).read(CUSTOMERS[:1]).known.all()


# -- PostgreSQL: the production registry ----------------------------------------------------------


def test_sql_registry_on_postgres_applies_once_and_serves_definitions(tmp_path: Path) -> None:
    skip_without_postgres("the production registry")
    project = f"test_{uuid.uuid4().hex[:10]}"
    feast = FeastSettings(project=project, registry_url="postgresql+psycopg://postgres@127.0.0.1:5432/test")

    settings, values = build_store(tmp_path, feast)
    again = apply_definitions(settings)

    assert again.changes == ()
    assert OnlineFeatures(settings).read([CUSTOMERS[0]]).known.all()
    frame = training_frame(settings, entity_rows([CUSTOMERS[0]], [SEPTEMBER]), "churn_v1")
    assert same(values[SEPTEMBER]["orders_30d"][0], frame.loc[0, "orders_30d"])
    feature_store(settings).teardown()


def test_each_service_serves_exactly_its_models_inputs() -> None:
    from features.model_inputs import SERVICE_SPECS
    from features.repo import feature_services

    instants = {f.name for f in STORED_FEATURES if f.kind == "timestamp"}
    for spec in SERVICE_SPECS:
        service = getattr(feature_services, spec.service)
        served = [field.name for projection in service.feature_view_projections for field in projection.features]

        assert sorted(served) == sorted(spec.inputs.names), spec.service
        assert not instants & set(served)
