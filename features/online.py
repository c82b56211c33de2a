"""The online feature path: materialize the latest snapshot into Feast's online store as one
packed vector per customer, and read it back for a list of ids in a millisecond or two.

Feast stays the source of truth: the vector is an ordinary Feast feature view
(`customer_vector`), written in Feast's own storage format (checked byte for byte against
Feast's serializers in the tests) and readable with `get_online_features`. What changes is
the cost: one row per customer instead of one per customer and feature, values packed with
numpy instead of one protobuf per value, and only the customers whose features changed. Reads
are the mirror image: one SELECT (SQLite) or one pipeline of HMGETs (Redis) per call, and the
numbers of every id decoded by one `np.frombuffer`.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import time
from collections.abc import Sequence
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
from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from custlens.errors import CustlensError
from custlens.progress import chunks
from custlens.settings import Settings
from features import layout
from features.catalog import FAMILIES, PACKED_LABELS, PACKED_NUMBERS, RECENCY_FEATURES, feature
from features.lake.tables import cutoff_instant
from features.recency import days_between_epochs
from features.store import feature_store, service_features

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
# Feast's SQLite and Redis online stores, written and read in bulk

# What one id holds in the online store: the serialized `numbers` and `labels` Values and the
# feature timestamp in epoch seconds; (None, None, None) when the store has nothing for it.
_StoredRow = tuple[bytes | None, bytes | None, float | None]
_NOTHING_STORED: _StoredRow = (None, None, None)
# SQLite allows 32,766 bound parameters per statement; larger reads go in chunks of this many ids.
_SQLITE_IDS_PER_SELECT = 10_000
# SQLite caps this at its compile-time maximum (2 GiB in common builds); beyond it, plain reads.
_SQLITE_READ_MMAP_BYTES = 1 << 40


class _SqliteTable:
    """Feast's SQLite table of `customer_vector`: rows (entity_key, feature_name) -> value, event_ts."""

    def __init__(self, store: FeatureStore, view: FeatureView) -> None:
        from feast.infra.online_stores.sqlite import _table_id

        config = store.config
        self.path = config.online_store.path
        self.table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
        self._reader: sqlite3.Connection | None = None

    def is_empty(self, probe: list[bytes]) -> bool:
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

    def read(self, keys: list[bytes]) -> list[_StoredRow]:
        # event_ts is read as the epoch seconds the writer stored: Feast's own reader converts it
        # with the local-time `datetime.fromtimestamp` and labels the result UTC.
        conn = self._reader or self._open_reader()
        found: dict[bytes, list[Any]] = {}
        for start in range(0, len(keys), _SQLITE_IDS_PER_SELECT):
            chunk = keys[start : start + _SQLITE_IDS_PER_SELECT]
            select = (
                f'SELECT entity_key, feature_name, value, event_ts FROM "{self.table}" '
                f"WHERE entity_key IN ({','.join('?' * len(chunk))})"
            )
            # fetchall: a half-read cursor would hold its WAL snapshot and keep later reads on stale rows.
            for key, name, value, event_ts in conn.execute(select, chunk).fetchall():
                row = found.setdefault(key, [None, None, event_ts])
                if name == "numbers":
                    row[0] = value
                elif name == "labels":
                    row[1] = value
        return [tuple(found[key]) if key in found else _NOTHING_STORED for key in keys]

    def _open_reader(self) -> sqlite3.Connection:
        path = Path(self.path).resolve()
        if not path.exists():
            raise CustlensError(f"online store {path} does not exist; run `custlens features materialize` first")
        # Read-only and kept open for the reader's life: no connect per request. A SELECT outside
        # a transaction sees every materialization committed before it (the writer enables WAL).
        # SQLite serializes the connection's use, so every thread of a service can share it.
        reader = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        # Memory-mapped pages instead of a read() per page: 25% off a 100-id read of a 1M-customer
        # store. Address space only; the pages are the OS page cache's, shared by every reader.
        reader.execute(f"PRAGMA mmap_size = {_SQLITE_READ_MMAP_BYTES}")
        self._reader = reader
        return reader


class _RedisHashes:
    """Feast's Redis layout: a hash per entity key + project, a field per feature and a timestamp."""

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
        # No table to look at: a store emptied behind our back (flushed, restarted) lacks these keys.
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

    def read(self, keys: list[bytes]) -> list[_StoredRow]:
        fields = (self.numbers_field, self.labels_field, self.ts_field)
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key + self.suffix, fields)
            answers = pipe.execute()
        return [(numbers, labels, _epoch_seconds(stamp)) for numbers, labels, stamp in answers]


def _epoch_seconds(stamp: bytes | None) -> float | None:
    if not stamp:
        return None
    parsed = Timestamp.FromString(stamp)
    return parsed.seconds + parsed.nanos / 1e9


def _online_table(store: FeatureStore, view: FeatureView) -> _SqliteTable | _RedisHashes:
    if store.config.online_store.type == "redis":
        return _RedisHashes(store, view)
    return _SqliteTable(store, view)


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
    table = _online_table(store, view)

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
    empty = table.is_empty(entity_key_bytes(snapshot.customer_ids[:3]))
    full = full or empty or len(changed) == len(snapshot)
    if full:
        changed = np.arange(len(snapshot))

    event_ts = int(cutoff_instant(snapshot.cutoff).timestamp())
    batch = settings.feast.materialize_batch_rows
    for rows in chunks(console, "materializing", len(changed), batch):
        part = snapshot.take(changed[rows])
        table.write(
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
        try:
            view = self.store.get_feature_view(VECTOR_VIEW)
        except Exception as exc:
            raise CustlensError("the feature store has no customer_vector view; run `custlens features apply`") from exc
        self._table = _online_table(self.store, view)
        self._services: dict[str, tuple[str, ...]] = {}
        self._plans: dict[tuple[str, ...], _FramePlan] = {}

    def read(self, customer_ids: Sequence[str], request_time: datetime | None = None) -> OnlineRows:
        ids = [str(customer_id) for customer_id in customer_ids]
        stored = self._table.read(entity_key_bytes(ids))
        known = np.zeros(len(ids), dtype=bool)
        packed_numbers: list[bytes] = []
        labels: list[list[str | None]] = []
        stamps: list[datetime | None] = []
        instant_of: dict[float, datetime] = {}  # one snapshot, one timestamp: convert it once
        for i, (numbers_value, labels_value, event_ts) in enumerate(stored):
            row_numbers, row_labels = _number_bytes(numbers_value), _decoded_labels(labels_value)
            # Anything but exactly our vector is unknown: nothing stored (SQLite), an empty hash
            # (Redis), or a vector of another width, written before the catalog changed.
            if row_numbers is None or row_labels is None or event_ts is None:
                labels.append([None] * len(PACKED_LABELS))
                stamps.append(None)
                continue
            known[i] = True
            packed_numbers.append(row_numbers)
            labels.append(row_labels)
            if event_ts not in instant_of:
                instant_of[event_ts] = datetime.fromtimestamp(event_ts, UTC)
            stamps.append(instant_of[event_ts])
        numbers = np.full((len(ids), len(PACKED_NUMBERS)), np.nan)
        if packed_numbers:
            numbers[known] = np.frombuffer(b"".join(packed_numbers), dtype="<f8").reshape(-1, len(PACKED_NUMBERS))
        return OnlineRows(ids, known, stamps, numbers, labels, request_time or datetime.now(UTC))

    def service_features(self, service: str) -> tuple[str, ...]:
        """The feature names of a FeatureService, in the service's order."""
        if service not in self._services:
            self._services[service] = service_features(self.store, service)
        return self._services[service]

    def frame(self, customer_ids: Sequence[str], service: str, request_time: datetime | None = None) -> pd.DataFrame:
        """The features of `service` for these ids, one row per id in order, as of the request time.

        See `features_frame` for the columns.
        """
        return self.features_frame(customer_ids, self.service_features(service), request_time)

    def features_frame(
        self, customer_ids: Sequence[str], names: Sequence[str], request_time: datetime | None = None
    ) -> pd.DataFrame:
        """These features (catalog or day-count names) for these ids, one row per id in order.

        Columns: `customer_id` (object), `known` (bool), `feature_time` (datetime64[us, UTC]), then
        the service's features in its order. A column's dtype never depends on the batch: numbers,
        day counts and counts too are float64 with NaN for NULL (a count column holding a NULL is
        float64 in training frames as well), timestamps datetime64[us, UTC] with NaT, categories
        object with None. An unknown id has NULL in every column but `customer_id` and `known`.
        """
        return pd.DataFrame(self.features_columns(customer_ids, names, request_time), copy=False)

    def features_columns(
        self, customer_ids: Sequence[str], names: Sequence[str], request_time: datetime | None = None
    ) -> dict[str, np.ndarray]:
        """`features_frame` as a dict of numpy columns, without building the frame: the online
        scoring path reads each column once, and a DataFrame's per-column access costs more than
        the models' predictions for one customer."""
        rows = self.read(customer_ids, request_time)
        feature_time = np.array([np.nan if t is None else t.timestamp() for t in rows.feature_time], dtype="float64")
        return _packed_columns(
            rows.customer_ids, rows.known, feature_time, rows.numbers, rows.labels, rows.request_time,
            self._plan(tuple(names)),
        )  # fmt: skip

    def _plan(self, names: tuple[str, ...]) -> _FramePlan:
        if names not in self._plans:
            self._plans[names] = _FramePlan.of(names)
        return self._plans[names]


def snapshot_features_frame(
    snapshot: PackedSnapshot, names: Sequence[str], request_time: datetime, rows: slice | None = None
) -> pd.DataFrame:
    """Rows `rows` of a packed snapshot (default: all) as `OnlineFeatures.features_frame` gives
    them once that snapshot is materialized: the same columns and dtypes, every row known, day
    counts at `request_time`. The batch job scores from this, so batch and online see the same
    features."""
    rows = rows or slice(None)
    customer_ids = snapshot.customer_ids[rows]
    count = len(customer_ids)
    feature_time = np.full(count, cutoff_instant(snapshot.cutoff).timestamp(), dtype="float64")
    columns = _packed_columns(
        customer_ids, np.ones(count, dtype=bool), feature_time, snapshot.numbers[rows], snapshot.labels[rows],
        request_time, _FramePlan.of(names),
    )  # fmt: skip
    return pd.DataFrame(columns, copy=False)


def _packed_columns(
    customer_ids: Sequence[str],
    known: np.ndarray,
    feature_time: np.ndarray,
    numbers: np.ndarray,
    labels: Sequence[Sequence[str | None]],
    request_time: datetime,
    plan: _FramePlan,
) -> dict[str, Any]:
    """The columns of the features frame of packed rows (see `OnlineFeatures.features_frame`);
    `feature_time` in epoch seconds (NaN: none), a label "" or None is NULL."""
    count = len(customer_ids)
    customer_id = np.empty(count, dtype=object)
    customer_id[:] = customer_ids
    # Every instant column (feature_time first) converted in one call, then cut apart.
    instants = _utc_instants(np.concatenate([feature_time, numbers[:, plan.instants].T.ravel()]))
    days = days_between_epochs(request_time.timestamp(), numbers[:, plan.day_counts])
    columns: dict[str, Any] = {JOIN_KEY: customer_id, "known": known, "feature_time": instants[:count]}
    for name, (kind, index) in zip(plan.names, plan.steps, strict=True):
        if kind == "number":
            columns[name] = numbers[:, index]
        elif kind == "days":
            columns[name] = days[:, index]
        elif kind == "instant":
            columns[name] = instants[(index + 1) * count : (index + 2) * count]
        else:
            label = np.empty(count, dtype=object)
            label[:] = [row[index] or None for row in labels]
            columns[name] = label
    # Fresh arrays, made for this frame and shared with nothing: a DataFrame may take them uncopied.
    return columns


@dataclass(frozen=True)
class _FramePlan:
    """Where each feature of a service comes from in OnlineRows, worked out once per service.

    A step is (kind, index): "number" and "label" index the packed numbers and labels; "days"
    indexes the day counts taken from the stored timestamps at packed positions `day_counts`,
    "instant" the instants converted from packed positions `instants`.
    """

    names: tuple[str, ...]
    steps: tuple[tuple[str, int], ...]
    day_counts: list[int]
    instants: list[int]

    @classmethod
    def of(cls, names: Sequence[str]) -> _FramePlan:
        steps: list[tuple[str, int]] = []
        day_counts: list[int] = []
        instants: list[int] = []
        for name in names:
            if name in RECENCY_FEATURES:
                steps.append(("days", len(day_counts)))
                day_counts.append(_NUMBER_INDEX[RECENCY_FEATURES[name]])
            elif name in _LABEL_INDEX:
                steps.append(("label", _LABEL_INDEX[name]))
            elif feature(name).kind == "timestamp":
                steps.append(("instant", len(instants)))
                instants.append(_NUMBER_INDEX[name])
            else:
                steps.append(("number", _NUMBER_INDEX[name]))
        return cls(tuple(names), tuple(steps), day_counts, instants)


_NUMBERS_HEADER = _double_list_header(len(PACKED_NUMBERS))


def _number_bytes(value: bytes | None) -> bytes | None:
    """The raw little-endian doubles of a stored numbers Value; None unless it is exactly what
    `number_value_bytes` writes for len(PACKED_NUMBERS) numbers (the header, then the doubles)."""
    if value is None or len(value) != len(_NUMBERS_HEADER) + 8 * len(PACKED_NUMBERS):
        return None
    return value[len(_NUMBERS_HEADER) :] if value.startswith(_NUMBERS_HEADER) else None


def _decoded_labels(value: bytes | None) -> list[str | None] | None:
    """The labels of a stored Value, "" read as None; None unless it holds len(PACKED_LABELS) strings."""
    if value is None:
        return None
    try:
        labels = Value.FromString(value).string_list_val.val
    except DecodeError:
        return None
    if len(labels) != len(PACKED_LABELS):
        return None
    return [label or None for label in labels]


def _utc_instants(epoch_seconds: np.ndarray) -> pd.arrays.DatetimeArray:
    """Epoch seconds (NaN is NULL) as datetime64[us, UTC], rounded to the microsecond like
    `datetime.fromtimestamp`."""
    micros = np.where(np.isnan(epoch_seconds), np.iinfo("int64").min, np.round(epoch_seconds * 1e6))
    return pd.DatetimeIndex(micros.astype("int64").view("M8[us]"), tz=UTC).array


def sample_customer_id(settings: Settings) -> str:
    """A customer worth showing: the latest snapshot's most frequent buyer of the last year."""
    snapshot = load_packed_snapshot(settings)
    orders = snapshot.numbers[:, _NUMBER_INDEX["orders_365d"]]
    if len(snapshot) == 0:
        raise CustlensError("the latest snapshot has no customers")
    return snapshot.customer_ids[int(np.nanargmax(np.nan_to_num(orders, nan=-1.0)))]
