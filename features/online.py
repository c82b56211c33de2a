"""The online feature path: materialize the latest snapshot into Feast's online store as one
packed vector per customer, and read it back for a list of ids in a millisecond or two.

Feast stays the source of truth: the vector is an ordinary Feast feature view
(`customer_vector`), written in Feast's own storage format (features/feast_format.py, checked
byte for byte against Feast's serializers in the tests) and readable with `get_online_features`.
What changes is the cost: one row per customer instead of one per customer and feature, values
packed with numpy instead of one protobuf per value, and only the customers whose features
changed. Reads are the mirror image: one SELECT (SQLite) or one pipeline of HMGETs (Redis) per
call, and the numbers of every id decoded by one `np.frombuffer`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore
from rich.console import Console

from custlens.errors import CustlensError
from custlens.progress import chunks
from custlens.settings import Settings
from features import feast_format, layout
from features.catalog import PACKED_LABELS, PACKED_NUMBERS, RECENCY_FEATURES, feature
from features.lake.tables import atomic_file, cutoff_instant
from features.recency import days_between_epochs
from features.snapshot_reader import (
    JOIN_KEY,
    LABEL_INDEX,
    NUMBER_INDEX,
    FramePlan,
    PackedSnapshot,
    load_packed_snapshot,
    packed_columns,
)
from features.store import feature_store, service_features

VECTOR_VIEW = "customer_vector"


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
    table = feast_format.online_table(store, view)

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
    empty = table.is_empty(feast_format.entity_key_bytes(JOIN_KEY, snapshot.customer_ids[:3]))
    full = full or empty or len(changed) == len(snapshot)
    if full:
        changed = np.arange(len(snapshot))

    event_ts = int(cutoff_instant(snapshot.cutoff).timestamp())
    batch = settings.feast.materialize_batch_rows
    for rows in chunks(console, "materializing", len(changed), batch):
        part = snapshot.take(changed[rows])
        table.write(
            feast_format.entity_key_bytes(JOIN_KEY, part.customer_ids),
            feast_format.double_list_bytes(part.numbers),
            feast_format.string_list_bytes(part.labels),
            event_ts,
        )

    _write_packed_source(snapshot, layout.packed_path(settings.data_dir.resolve()))
    _write_digests(previous_path, snapshot, digests)
    instant = cutoff_instant(snapshot.cutoff)
    feast_format.record_materialization(store, view, instant, instant)
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
    with atomic_file(path) as partial:
        pq.write_table(table, partial)


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
    with atomic_file(path) as partial:
        pq.write_table(table, partial, compression="zstd")


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
        if name in LABEL_INDEX:
            return self.labels[row][LABEL_INDEX[name]]
        number = _none_if_nan(float(self.numbers[row, NUMBER_INDEX[name]]))
        kind = feature(name).kind
        if number is None or kind == "number":
            return number
        if kind == "count":
            return int(number)
        return datetime.fromtimestamp(number, tz=UTC)

    def days_since(self, stamp: str) -> np.ndarray:
        return days_between_epochs(self.request_time.timestamp(), self.numbers[:, NUMBER_INDEX[stamp]])


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
        self._table = feast_format.online_table(self.store, view)
        self._services: dict[str, tuple[str, ...]] = {}
        self._plans: dict[tuple[str, ...], FramePlan] = {}

    def read(self, customer_ids: Sequence[str], request_time: datetime | None = None) -> OnlineRows:
        ids = [str(customer_id) for customer_id in customer_ids]
        stored = self._table.read(feast_format.entity_key_bytes(JOIN_KEY, ids))
        known = np.zeros(len(ids), dtype=bool)
        packed_numbers: list[bytes] = []
        labels: list[list[str | None]] = []
        stamps: list[datetime | None] = []
        instant_of: dict[float, datetime] = {}  # one snapshot, one timestamp: convert it once
        for i, (numbers_value, labels_value, event_ts) in enumerate(stored):
            row_numbers = feast_format.double_list_payload(numbers_value, len(PACKED_NUMBERS))
            row_labels = feast_format.string_list(labels_value, len(PACKED_LABELS))
            # Anything but exactly our vector is unknown: nothing stored (SQLite), an empty hash
            # (Redis), or a vector of another width, written before the catalog changed.
            if row_numbers is None or row_labels is None or event_ts is None:
                labels.append([None] * len(PACKED_LABELS))
                stamps.append(None)
                continue
            known[i] = True
            packed_numbers.append(row_numbers)
            labels.append([label or None for label in row_labels])  # "" is NULL
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
        return packed_columns(
            rows.customer_ids, rows.known, feature_time, rows.numbers, rows.labels, rows.request_time,
            self._plan(tuple(names)),
        )  # fmt: skip

    def _plan(self, names: tuple[str, ...]) -> FramePlan:
        if names not in self._plans:
            self._plans[names] = FramePlan.of(names)
        return self._plans[names]
