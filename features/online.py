"""The online feature path: materialize the latest snapshot into Feast's online store as one
packed vector per customer, and read it back for a list of ids in a millisecond or two.

Feast stays the source of truth: the vector is an ordinary Feast feature view
(`customer_vector`), written in Feast's own storage format (checked byte for byte against
Feast's serializers in the tests) and readable with `get_online_features`. What changes is
the cost: one row per customer instead of one per customer and feature, values packed with
numpy instead of one protobuf per value, and only the customers whose features changed.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from custlens.errors import CustlensError
from custlens.settings import Settings
from features import layout
from features.catalog import FAMILIES, PACKED_LABELS, PACKED_NUMBERS, RECENCY_FEATURES, feature
from features.recency import days_between_epochs
from features.store import cutoff_instant, feature_service, feature_store

VECTOR_VIEW = "customer_vector"
JOIN_KEY = "customer_id"
_NUMBER_INDEX = {name: i for i, name in enumerate(PACKED_NUMBERS)}
_LABEL_INDEX = {name: i for i, name in enumerate(PACKED_LABELS)}


# ---------------------------------------------------------------------------------------------
# Feast's storage format, built in bulk


def entity_key_bytes(customer_ids: Sequence[str]) -> list[bytes]:
    """Feast's serialize_entity_key (version 3) for one string join key, without a proto per id."""
    head = struct.pack("<II", 1, 2) + struct.pack("<I", len(JOIN_KEY)) + JOIN_KEY.encode()
    return [head + struct.pack("<II", 2, len(raw)) + raw for raw in (i.encode("utf-8") for i in customer_ids)]


def _double_list_header(width: int) -> bytes:
    # A Value holding `width` doubles is this fixed prefix followed by the raw little-endian doubles.
    whole = Value(double_list_val=DoubleList(val=[0.0] * width)).SerializeToString()
    return whole[: len(whole) - 8 * width]


def number_value_bytes(numbers: np.ndarray) -> list[bytes]:
    """Serialized `Value(double_list_val=...)` per row of a float64 matrix."""
    rows = np.ascontiguousarray(numbers, dtype="<f8")
    header = _double_list_header(rows.shape[1])
    return [header + row.tobytes() for row in rows]


def label_value_bytes(labels: Sequence[Sequence[str]]) -> list[bytes]:
    return [Value(string_list_val=StringList(val=row)).SerializeToString() for row in labels]


# ---------------------------------------------------------------------------------------------
# The latest snapshot, packed


@dataclass
class PackedSnapshot:
    cutoff: date
    customer_ids: list[str]
    numbers: np.ndarray  # (customers, len(PACKED_NUMBERS)) float64, NaN is NULL
    labels: list[list[str]]  # (customers, len(PACKED_LABELS)), "" is NULL

    def __len__(self) -> int:
        return len(self.customer_ids)

    def digests(self) -> np.ndarray:
        """An 8-byte fingerprint per customer, to load only what changed since the last run."""
        out = np.empty(len(self), dtype="u8")
        for i, (row, labels) in enumerate(zip(self.numbers, self.labels, strict=True)):
            blake = hashlib.blake2b(row.tobytes(), digest_size=8)
            blake.update("\x1f".join(labels).encode("utf-8"))
            out[i] = int.from_bytes(blake.digest(), "little")
        return out

    def take(self, positions: np.ndarray) -> PackedSnapshot:
        return PackedSnapshot(
            self.cutoff,
            [self.customer_ids[i] for i in positions],
            self.numbers[positions],
            [self.labels[i] for i in positions],
        )


def snapshot_cutoffs(settings: Settings) -> list[date]:
    """Cutoffs for which every family has a snapshot file, oldest first."""
    per_family = []
    for family in FAMILIES:
        folder = layout.family_dir(family, settings.data_dir.resolve())
        per_family.append({date.fromisoformat(p.stem) for p in folder.glob("*.parquet")} if folder.is_dir() else set())
    return sorted(set.intersection(*per_family))


def load_packed_snapshot(settings: Settings, cutoff: date | None = None) -> PackedSnapshot:
    available = snapshot_cutoffs(settings)
    if not available:
        raise CustlensError(
            f"no feature snapshots under {settings.features_dir}; run `custlens features build` first"
        )
    cutoff = cutoff or available[-1]
    if cutoff not in available:
        raise CustlensError(
            f"no complete snapshot at {cutoff}; built cutoffs run from {available[0]} to {available[-1]}"
        )
    tables = {
        family: pq.read_table(layout.family_dir(family, settings.data_dir.resolve()) / f"{cutoff}.parquet")
        for family in FAMILIES
    }
    ids = tables["profile"].column(JOIN_KEY)
    for family, table in tables.items():
        if not table.column(JOIN_KEY).equals(ids):
            raise CustlensError(f"snapshot {cutoff}: family {family} does not list the same customers as profile")
    numbers = np.empty((len(ids), len(PACKED_NUMBERS)), dtype="float64")
    for j, name in enumerate(PACKED_NUMBERS):
        column = tables[feature(name).family].column(name)
        if pa.types.is_timestamp(column.type):
            column = pc.divide(column.cast(pa.timestamp("us", "UTC")).cast(pa.int64()).cast(pa.float64()), 1e6)
        numbers[:, j] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    label_columns = [
        tables[feature(name).family].column(name).cast(pa.string()).fill_null("").to_pylist() for name in PACKED_LABELS
    ]
    labels = [list(row) for row in zip(*label_columns, strict=True)] if label_columns else [[] for _ in range(len(ids))]
    return PackedSnapshot(cutoff, ids.to_pylist(), numbers, labels)


def _write_packed_source(snapshot: PackedSnapshot, path: Path) -> None:
    """The packed snapshot as the batch source of `customer_vector` (Feast's own materialize reads it)."""
    width = len(PACKED_NUMBERS)
    numbers = pa.FixedSizeListArray.from_arrays(pa.array(snapshot.numbers.ravel(), pa.float64()), width)
    table = pa.table(
        {
            JOIN_KEY: pa.array(snapshot.customer_ids, pa.string()),
            "event_timestamp": pa.array([cutoff_instant(snapshot.cutoff)] * len(snapshot), pa.timestamp("us", "UTC")),
            "numbers": numbers.cast(pa.list_(pa.float64())),
            "labels": pa.array(snapshot.labels, pa.list_(pa.string())),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    pq.write_table(table, partial, compression="zstd")
    partial.replace(path)


# ---------------------------------------------------------------------------------------------
# Writers: Feast's SQLite and Redis online stores


class _SqliteWriter:
    def __init__(self, store: FeatureStore, view: FeatureView) -> None:
        from feast.infra.online_stores.sqlite import _table_id

        config = store.config
        self.path = config.online_store.path
        self.table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)

    def is_empty(self) -> bool:
        with sqlite3.connect(self.path) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (self.table,)).fetchone() is None:
                raise CustlensError(f"online table {self.table} does not exist; run `custlens features apply` first")
            return conn.execute(f'SELECT 1 FROM "{self.table}" LIMIT 1').fetchone() is None

    def write(self, keys: list[bytes], numbers: list[bytes], labels: list[bytes], event_ts: int) -> None:
        created = int(time.time())
        conn = sqlite3.connect(self.path)
        try:
            # WAL lets a serving process keep reading while a materialization writes.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            rows = [
                row
                for key, number, label in zip(keys, numbers, labels, strict=True)
                for row in ((key, "numbers", number, event_ts, created), (key, "labels", label, event_ts, created))
            ]
            with conn:
                conn.executemany(
                    f'INSERT INTO "{self.table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
                    "VALUES (?, ?, ?, NULL, ?, ?) "
                    "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
                    "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts",
                    rows,
                )
        finally:
            conn.close()


class _RedisWriter:
    def __init__(self, store: FeatureStore, view: FeatureView) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        online_store = store._get_provider().online_store
        self.client = online_store._get_client(store.config.online_store)  # type: ignore[attr-defined]
        self.suffix = store.config.project.encode("utf-8")
        self.numbers_field = _mmh3(f"{view.name}:numbers")
        self.labels_field = _mmh3(f"{view.name}:labels")
        self.ts_field = f"_ts:{view.name}"
        self.key_ttl = store.config.online_store.key_ttl_seconds

    def is_empty(self, probe: list[bytes]) -> bool:
        return not any(self.client.exists(key + self.suffix) for key in probe)

    def write(self, keys: list[bytes], numbers: list[bytes], labels: list[bytes], event_ts: int) -> None:
        stamp = Timestamp(seconds=event_ts).SerializeToString()
        with self.client.pipeline(transaction=False) as pipe:
            for key, number, label in zip(keys, numbers, labels, strict=True):
                name = key + self.suffix
                pipe.hset(name, mapping={self.numbers_field: number, self.labels_field: label, self.ts_field: stamp})
                if self.key_ttl:
                    pipe.expire(name, self.key_ttl)
            pipe.execute()


# ---------------------------------------------------------------------------------------------
# Materialize


@dataclass(frozen=True)
class MaterializeReport:
    cutoff: date
    customers: int
    written: int
    full: bool
    seconds: float
    store: str

    def render(self) -> str:
        kind = "full load" if self.full else "incremental"
        return (
            f"materialized snapshot {self.cutoff} into the {self.store} online store ({kind}): "
            f"{self.written:,} of {self.customers:,} customers written in {self.seconds:.1f} s"
        )


def _digest_path(settings: Settings) -> Path:
    # Keyed by store kind and project: switching stores never skips a customer.
    return settings.feast_dir / f"online-{settings.feast.online_store}-{settings.feast.project}.digests.parquet"


def materialize(
    settings: Settings, cutoff: date | None = None, full: bool = False, console: Console | None = None
) -> MaterializeReport:
    """Load the snapshot at `cutoff` (default: the latest) into the online store.

    Only customers whose features differ from the last materialization are written, unless
    `full` is set or the online store turns out to be empty (a fresh Redis, say).
    """
    started = time.perf_counter()
    store = feature_store(settings)
    try:
        view = store.get_feature_view(VECTOR_VIEW)
    except Exception as exc:
        raise CustlensError("the feature store has no customer_vector view; run `custlens features apply`") from exc
    snapshot = load_packed_snapshot(settings, cutoff)
    writer: _SqliteWriter | _RedisWriter
    writer = _RedisWriter(store, view) if settings.feast.online_store == "redis" else _SqliteWriter(store, view)

    digests = snapshot.digests()
    changed = np.arange(len(snapshot))
    previous_path = _digest_path(settings)
    # Within one cutoff (today's snapshot rebuilt after a new ingest, say) only changed customers
    # are written; a new cutoff moves every row's feature timestamp, so all of them are.
    if not full and previous_path.exists() and _same_cutoff(previous_path, snapshot.cutoff):
        previous = pq.read_table(previous_path)
        loaded = dict(zip(previous.column(JOIN_KEY).to_pylist(), previous.column("digest").to_pylist(), strict=True))
        changed = np.array(
            [i for i, (customer_id, digest) in enumerate(zip(snapshot.customer_ids, digests.tolist(), strict=True))
             if loaded.get(customer_id) != digest],
            dtype="int64",
        )
    empty = (
        writer.is_empty(entity_key_bytes(snapshot.customer_ids[:3]))
        if isinstance(writer, _RedisWriter)
        else writer.is_empty()
    )
    full = full or empty or len(changed) == len(snapshot)
    if full:
        changed = np.arange(len(snapshot))

    event_ts = int(cutoff_instant(snapshot.cutoff).timestamp())
    batch = settings.feast.materialize_batch_rows
    for start in _progress(console, range(0, len(changed), batch), len(changed), batch):
        part = snapshot.take(changed[start : start + batch])
        writer.write(
            entity_key_bytes(part.customer_ids),
            number_value_bytes(part.numbers),
            label_value_bytes(part.labels),
            event_ts,
        )

    _write_packed_source(snapshot, layout.packed_path(settings.data_dir.resolve()))
    _write_digests(previous_path, snapshot, digests)
    instant = cutoff_instant(snapshot.cutoff)
    store.registry.apply_materialization(view, store.project, instant, instant, commit=True)
    return MaterializeReport(
        snapshot.cutoff, len(snapshot), len(changed), full, time.perf_counter() - started, settings.feast.online_store
    )


def _same_cutoff(path: Path, cutoff: date) -> bool:
    metadata = pq.read_schema(path).metadata or {}
    return metadata.get(b"cutoff") == str(cutoff).encode()


def _write_digests(path: Path, snapshot: PackedSnapshot, digests: np.ndarray) -> None:
    table = pa.table({JOIN_KEY: snapshot.customer_ids, "digest": digests}).replace_schema_metadata(
        {"cutoff": str(snapshot.cutoff)}
    )
    partial = path.with_suffix(".partial")
    pq.write_table(table, partial)
    partial.replace(path)


def _progress(console: Console | None, steps: range, total: int, batch: int) -> Iterator[int]:
    if console is None:
        yield from steps
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("materializing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("customers", total=total)
        for start in steps:
            yield start
            progress.update(task, advance=min(batch, total - start))


# ---------------------------------------------------------------------------------------------
# Read


@dataclass
class OnlineRows:
    """What the online store holds for a list of ids, in the order asked."""

    customer_ids: list[str]
    known: np.ndarray  # bool per id: False = never materialized (no features, not zeros)
    feature_time: list[datetime | None]  # the snapshot each row comes from
    numbers: np.ndarray  # (ids, len(PACKED_NUMBERS)) float64; NaN for NULL and for unknown ids
    labels: list[list[str | None]]
    request_time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def value(self, row: int, name: str) -> Any:
        """One feature of one row as a plain value (None for NULL), day counts at request time."""
        if name in RECENCY_FEATURES:
            return _none_if_nan(float(self.days_since(RECENCY_FEATURES[name])[row]))
        if name in _LABEL_INDEX:
            return self.labels[row][_LABEL_INDEX[name]]
        number = _none_if_nan(float(self.numbers[row, _NUMBER_INDEX[name]]))
        kind = feature(name).kind
        if number is None or kind == "number":
            return number
        if kind == "count":
            return int(number)
        return datetime.fromtimestamp(number, tz=UTC)

    def days_since(self, stamp: str) -> np.ndarray:
        return days_between_epochs(self.request_time.timestamp(), self.numbers[:, _NUMBER_INDEX[stamp]])


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else value


class OnlineFeatures:
    """Reads customers' features from the online store; build once, call per request."""

    def __init__(self, settings: Settings, store: FeatureStore | None = None) -> None:
        self.store = store or feature_store(settings)
        self._config = self.store.config
        self._online_store = self.store._get_provider().online_store
        try:
            self._view = self.store.get_feature_view(VECTOR_VIEW)
        except Exception as exc:
            raise CustlensError("the feature store has no customer_vector view; run `custlens features apply`") from exc
        self._empty_numbers = np.full(len(PACKED_NUMBERS), np.nan)
        # Feast's SQLite store reads event_ts back as local wall time labelled UTC; undo that.
        self._local_stamps = settings.feast.online_store == "sqlite"
        self._services: dict[str, tuple[str, ...]] = {}

    def read(self, customer_ids: Sequence[str], request_time: datetime | None = None) -> OnlineRows:
        ids = [str(customer_id) for customer_id in customer_ids]
        keys = [EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=i)]) for i in ids]
        rows = self._online_store.online_read(self._config, self._view, keys)
        known = np.zeros(len(ids), dtype=bool)
        numbers = np.empty((len(ids), len(PACKED_NUMBERS)), dtype="float64")
        labels: list[list[str | None]] = []
        stamps: list[datetime | None] = []
        for i, (stamp, values) in enumerate(rows):
            # SQLite answers (None, None) for an unknown id; Redis an empty Value and the epoch.
            if values is not None and values["numbers"].HasField("double_list_val"):
                known[i] = True
                numbers[i] = values["numbers"].double_list_val.val
                labels.append([label or None for label in values["labels"].string_list_val.val])
                if stamp is not None and self._local_stamps:
                    stamp = stamp.replace(tzinfo=None).astimezone(UTC)
                stamps.append(stamp)
            else:
                numbers[i] = self._empty_numbers
                labels.append([None] * len(PACKED_LABELS))
                stamps.append(None)
        return OnlineRows(ids, known, stamps, numbers, labels, request_time or datetime.now(UTC))

    def service_features(self, service: str) -> tuple[str, ...]:
        """The feature names of a FeatureService, in the service's order."""
        if service not in self._services:
            definition = feature_service(self.store, service)
            self._services[service] = tuple(
                field.name for projection in definition.feature_view_projections for field in projection.features
            )
        return self._services[service]

    def frame(self, customer_ids: Sequence[str], service: str, request_time: datetime | None = None) -> pd.DataFrame:
        """The features of `service` for these ids, one row per id in order, as of the request time."""
        rows = self.read(customer_ids, request_time)
        names = self.service_features(service)
        records = [
            {
                JOIN_KEY: customer_id,
                "known": bool(rows.known[i]),
                "feature_time": rows.feature_time[i],
                **{name: rows.value(i, name) if rows.known[i] else None for name in names},
            }
            for i, customer_id in enumerate(rows.customer_ids)
        ]
        return pd.DataFrame.from_records(records, columns=[JOIN_KEY, "known", "feature_time", *names])


def sample_customer_id(settings: Settings) -> str:
    """A customer worth showing: the latest snapshot's most frequent buyer of the last year."""
    snapshot = load_packed_snapshot(settings)
    orders = snapshot.numbers[:, _NUMBER_INDEX["orders_365d"]]
    if len(snapshot) == 0:
        raise CustlensError("the latest snapshot has no customers")
    return snapshot.customer_ids[int(np.nanargmax(np.nan_to_num(orders, nan=-1.0)))]
