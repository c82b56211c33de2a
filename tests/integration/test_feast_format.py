"""Why each Feast workaround in features/feast_format.py exists, and that it still holds on the
pinned Feast: the bulk encoders produce Feast's own serializer output, the rows our bulk
writers store are the rows Feast's own writer stores (SQLite and the real Redis), stock
`get_online_features` reads them back, Feast's plan reports changes that are not changes, and
another Feast version is refused at import."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from custlens.errors import CustlensError
from custlens.settings import FeastSettings, Settings
from features import feast_format, layout
from features.catalog import PACKED_LABELS, PACKED_NUMBERS
from features.lake.tables import cutoff_instant
from features.online import VECTOR_VIEW, materialize
from features.store import REPO_DIR, apply_definitions, feature_store
from tests.support.feature_snapshots import synthetic_values, write_snapshot

OCTOBER = date(2026, 10, 1)
CUSTOMERS = [f"C{i:04d}" for i in range(10)]
# One packed row with the awkward cases: NULL (NaN), infinities, a huge value, an empty label.
NUMBERS = np.array([[1.5, math.nan, -3.0, math.inf, 1e300] + [float(i) for i in range(len(PACKED_NUMBERS) - 5)]])
LABELS = [["Hà Nội", ""] + [f"label-{i}" for i in range(len(PACKED_LABELS) - 2)]]


def applied_store(data_dir: Path, feast: FeastSettings | None = None) -> Settings:
    """A store with the definitions applied (which creates the online table) and nothing written."""
    settings = Settings(data_dir=data_dir, feast=feast or FeastSettings())
    write_snapshot(data_dir, OCTOBER, CUSTOMERS, synthetic_values(CUSTOMERS, OCTOBER, 0))
    apply_definitions(settings)
    return settings


def write_ours_and_feasts(settings: Settings) -> None:
    """The same packed row twice: as "ours" through feast_format's bulk writer, and as "theirs"
    through Feast's public `write_to_online_store`."""
    store = feature_store(settings)
    view = store.get_feature_view(VECTOR_VIEW)
    with feast_format.online_table(store, view).new_generation("ours", keep_current=True) as generation:
        generation.write(
            feast_format.entity_key_bytes("customer_id", ["ours"]),
            feast_format.double_list_bytes(NUMBERS),
            feast_format.string_list_bytes(LABELS),
            int(cutoff_instant(OCTOBER).timestamp()),
        )
    theirs = pd.DataFrame(
        {
            "customer_id": ["theirs"],
            "event_timestamp": [cutoff_instant(OCTOBER)],
            "numbers": [list(NUMBERS[0])],
            "labels": [LABELS[0]],
        }
    )
    store.write_to_online_store(VECTOR_VIEW, theirs)


@pytest.fixture
def utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Feast's SQLite writer stores event_ts through `int(naive_utc.timestamp())`, which reads a
    # naive datetime as local time; its reader undoes that. Ours stores true epoch seconds
    # (and reads them as such), so the two stored integers agree when local time is UTC.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- the encoding ---------------------------------------------------------------------------------


def test_bulk_encoding_is_byte_identical_to_feasts_serializers() -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value

    ids = ["C0001", "khách-hàng-ẞ", ""]
    numbers = np.array([[1.5, np.nan, -3.0], [0.0, 1e300, 2.0], [np.inf, 7.0, 8.0]])
    labels = [["Hà Nội", ""], ["x", "y"], ["", ""]]

    keys = feast_format.entity_key_bytes("customer_id", ids)
    encoded_numbers = feast_format.double_list_bytes(numbers)
    encoded_labels = feast_format.string_list_bytes(labels)

    for i, customer_id in enumerate(ids):
        proto_key = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])
        assert keys[i] == serialize_entity_key(
            proto_key, entity_key_serialization_version=feast_format.ENTITY_KEY_SERIALIZATION_VERSION
        )
        assert encoded_numbers[i] == Value(double_list_val=DoubleList(val=list(numbers[i]))).SerializeToString()
        assert encoded_labels[i] == Value(string_list_val=StringList(val=labels[i])).SerializeToString()


def test_decoding_gives_back_what_was_encoded_and_nothing_else() -> None:
    [numbers] = feast_format.double_list_bytes(NUMBERS)
    [labels] = feast_format.string_list_bytes(LABELS)
    width, label_width = len(PACKED_NUMBERS), len(PACKED_LABELS)

    payload = feast_format.double_list_payload(numbers, width)
    assert payload is not None
    np.testing.assert_array_equal(np.frombuffer(payload, dtype="<f8"), NUMBERS[0])
    assert list(feast_format.string_list(labels, label_width) or []) == LABELS[0]
    # Another width (a vector written before a catalog change), another type, or nothing: None.
    assert feast_format.double_list_payload(numbers, width - 1) is None
    assert feast_format.double_list_payload(labels, width) is None
    assert feast_format.double_list_payload(None, width) is None
    assert feast_format.string_list(labels, label_width + 1) is None
    assert feast_format.string_list(b"\xff\xff", label_width) is None
    assert feast_format.string_list(None, label_width) is None


# -- the online stores' layout ----------------------------------------------------------------------


def test_our_sqlite_rows_are_the_rows_feasts_own_writer_stores(tmp_path: Path, utc_local_time: None) -> None:
    settings = applied_store(tmp_path)
    write_ours_and_feasts(settings)
    table = feast_format.SqliteTable(feature_store(settings), feature_store(settings).get_feature_view(VECTOR_VIEW))
    ours_key, theirs_key = feast_format.entity_key_bytes("customer_id", ["ours", "theirs"])

    with sqlite3.connect(table.path) as conn:
        rows = {
            key: sorted(
                conn.execute(
                    f'SELECT feature_name, value, value_text, vector_value, event_ts FROM "{table.table}" '
                    "WHERE entity_key = ?",
                    (key,),
                ).fetchall()
            )
            for key in (ours_key, theirs_key)
        }

    assert table.table == f"{settings.feast.project}_{VECTOR_VIEW}"
    assert len(rows[theirs_key]) == 2  # Feast's writer found the row under the key we compute
    assert rows[ours_key] == rows[theirs_key]


def test_our_redis_hash_is_the_hash_feasts_own_writer_stores(tmp_path: Path, redis_feast: FeastSettings) -> None:
    import redis

    settings = applied_store(tmp_path, redis_feast)
    write_ours_and_feasts(settings)
    client: Any = redis.Redis(host="127.0.0.1", port=6379)  # redis-py types every reply as maybe-awaitable
    suffix = settings.feast.project.encode()
    ours_key, theirs_key = (key + suffix for key in feast_format.entity_key_bytes("customer_id", ["ours", "theirs"]))

    ours, theirs = client.hgetall(ours_key), client.hgetall(theirs_key)

    assert len(theirs) == 3  # numbers, labels and the `_ts:` stamp, under the key we compute
    assert ours == theirs


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_stock_get_online_features_reads_what_we_wrote(tmp_path: Path, online_store: str, request: Any) -> None:
    feast = request.getfixturevalue("redis_feast") if online_store == "redis" else None
    settings = applied_store(tmp_path, feast)
    write_ours_and_feasts(settings)

    answer = (
        feature_store(settings)
        .get_online_features(
            features=[f"{VECTOR_VIEW}:numbers", f"{VECTOR_VIEW}:labels"],
            entity_rows=[{"customer_id": "ours"}, {"customer_id": "theirs"}],
        )
        .to_dict()
    )

    for row in range(2):
        np.testing.assert_array_equal(np.array(answer["numbers"][row], dtype="float64"), NUMBERS[0])
        assert answer["labels"][row] == LABELS[0]


# -- the registry -----------------------------------------------------------------------------------


def test_feasts_plan_reports_changes_after_a_materialization_that_apply_real_changes_ignores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast.diff.property_diff import TransitionType

    # given applied definitions and a materialization (which touches the data sources' meta)
    settings = applied_store(tmp_path)
    materialize(settings)
    store = feature_store(settings)
    monkeypatch.setenv(layout.DATA_DIR_VARIABLE, str(settings.data_dir.resolve()))  # as apply_definitions does
    contents = feast_format.parse_definitions(REPO_DIR, store.project, import_root=REPO_DIR.parents[1])
    registry = settings.feast_dir / "registry.db"
    before = registry.read_bytes()

    # then Feast's own plan calls unchanged definitions updated, which its apply would rewrite,
    registry_diff, _, _ = store.plan(contents)
    assert any(diff.transition_type == TransitionType.UPDATE for diff in registry_diff.feast_object_diffs)
    # and apply_real_changes finds nothing to apply and leaves the registry as it was
    assert feast_format.apply_real_changes(store, contents) == ()
    assert registry.read_bytes() == before


def test_a_bulk_materialization_is_recorded_in_the_registry(tmp_path: Path) -> None:
    settings = applied_store(tmp_path)

    materialize(settings)

    view = feature_store(settings).get_feature_view(VECTOR_VIEW)
    instant = cutoff_instant(OCTOBER)
    assert [(start.astimezone(UTC), end.astimezone(UTC)) for start, end in view.materialization_intervals] == [
        (instant, instant)
    ]


# -- the version check ------------------------------------------------------------------------------


def test_another_feast_version_is_refused_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.68.0" if name == "feast" else real_version(name))
    # A fresh copy of the module under another name: the one everything else imported stays as it is.
    spec = importlib.util.spec_from_file_location("feast_format_on_another_feast", feast_format.__file__)
    assert spec is not None and spec.loader is not None

    with pytest.raises(CustlensError, match=r"feast 0\.68\.0 is installed.*feast==0\.67\.0"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_the_pinned_version_is_the_installed_one() -> None:
    assert importlib.metadata.version("feast") == feast_format.PINNED_FEAST


def test_stamps_decode_as_the_epoch_seconds_written() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromDatetime(datetime(2026, 10, 1, tzinfo=UTC))

    assert feast_format._epoch_seconds(stamp.SerializeToString()) == cutoff_instant(OCTOBER).timestamp()
    assert feast_format._epoch_seconds(b"") is None and feast_format._epoch_seconds(None) is None


def test_the_file_registry_is_replaced_whole_even_when_the_write_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feast truncates the registry file before writing it: a materialize killed in between left
    no feature views at all. Written beside and renamed in, a killed write leaves the old one."""
    import os

    from feast.infra.registry.file import FileRegistryStore
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
    from feast.repo_config import RegistryConfig

    import features.feast_format  # noqa: F401 - installs the atomic write

    path = tmp_path / "registry.db"
    store = FileRegistryStore(RegistryConfig(path=str(path)), tmp_path)
    old = RegistryProto(registry_schema_version="1")
    store.update_registry_proto(old)
    before = path.read_bytes()

    def killed(source: object, target: object) -> None:
        raise KeyboardInterrupt  # the kill lands after the new bytes, before the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.update_registry_proto(RegistryProto(registry_schema_version="2"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".registry.db.*"))
