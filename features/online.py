"""The online feature path: materialize the latest snapshot into Feast's online store as one
packed vector per customer, and read it back for a list of ids in a millisecond or two.

Feast stays the source of truth: the vector is an ordinary Feast feature view
(`customer_vector`), written in Feast's own storage format (features/feast_format.py, checked
byte for byte against Feast's serializers in the tests) and readable with `get_online_features`.
What changes is the cost: one row per customer instead of one per customer and feature, values
packed with numpy instead of one protobuf per value, and only the customers whose features
changed. Reads are the mirror image: one SELECT (SQLite) or one pipeline of HMGETs (Redis) per
call, and the numbers of every id decoded by one `np.frombuffer`.

A materialization is a generation: readers see the previous one whole until the store switches
to the next in one step, however the run ends. The files written beside the store (the digests
that make the next run incremental, the packed source Feast's own materialize reads) carry the
generation's name and take their places right after the switch; the next run finishes that if a
kill came between, and trusts digests only of the generation the store holds.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
from features.asof import Freshness, resolve_snapshot
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
    snapshot_cutoffs,
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
    removed: int = 0  # customers of the previous generation that this snapshot no longer has
    switch_seconds: float = 0.0  # the step readers go from one generation to the next in
    as_of: str = ""  # which as-of the snapshot is and why

    def render(self) -> str:
        kind = "full load" if self.full else "incremental"
        removed = f", {self.removed:,} removed" if self.removed else ""
        return (
            f"materialized snapshot {self.cutoff} into the {self.store} online store ({kind}): "
            f"{self.written:,} of {self.customers:,} customers written{removed} in {self.seconds:.1f} s "
            f"(the switch to it took {self.switch_seconds * 1000:,.0f} ms)" + (f"\n{self.as_of}" if self.as_of else "")
        )


def _digest_path(settings: Settings) -> Path:
    # Keyed by store kind and project: switching stores never skips a customer.
    return settings.feast_dir / f"online-{settings.feast.online_store}-{settings.feast.project}.digests.parquet"


def _side_files(settings: Settings) -> tuple[Path, Path]:
    """The files each generation writes beside the store: its digests and the packed source."""
    return _digest_path(settings), layout.packed_path(settings.data_dir.resolve())


def _pending(path: Path, generation: str) -> Path:
    """Where a side file of `generation` waits for the store to switch to it."""
    return path.with_name(f"{path.name}.generation-{generation}")


def materialize(
    settings: Settings, cutoff: date | None = None, full: bool = False, console: Console | None = None
) -> MaterializeReport:
    """Load the snapshot at `cutoff` (default: the live as-of, features/asof.py) into the online store, as a new
    generation that readers switch to in one step.

    Only customers whose features differ from the generation the store holds are written, unless
    `full` is set, the cutoff is another, or the store turns out to be empty (a fresh Redis, say)
    or to hold a generation the digests do not describe (a run killed after its switch).
    """
    started = time.perf_counter()
    store = feature_store(settings)
    try:
        view = store.get_feature_view(VECTOR_VIEW)
    except Exception as exc:
        raise CustlensError("the feature store has no customer_vector view; run `custlens features apply`") from exc
    cutoff, as_of = resolve_snapshot(settings, cutoff, snapshot_cutoffs(settings))
    snapshot = load_packed_snapshot(settings, cutoff)
    table = feast_format.online_table(store, view)
    digest_file, packed_file = _side_files(settings)
    with _only_run(settings):
        current = table.generation()
        _settle_side_files(settings, current)
        digests = snapshot.digests()
        previous = _previous_digests(digest_file)
        removed = sorted(set(previous) - set(snapshot.customer_ids)) if previous is not None else []
        changed = np.arange(len(snapshot))
        # Within one cutoff (today's snapshot rebuilt after a new ingest, say) only changed customers
        # are written; a new cutoff moves every row's feature timestamp, so all of them are.
        if not full and previous is not None and _describes(digest_file, snapshot.cutoff, current):
            changed = np.array(
                [i for i, (customer_id, digest) in enumerate(zip(snapshot.customer_ids, digests.tolist(), strict=True))
                 if previous.get(customer_id) != digest],
                dtype="int64",
            )
        empty = table.is_empty(feast_format.entity_key_bytes(JOIN_KEY, snapshot.customer_ids[:3]))
        full = full or empty or len(changed) == len(snapshot)
        if full:
            changed = np.arange(len(snapshot))

        generation = uuid.uuid4().hex
        _write_digests(_pending(digest_file, generation), snapshot, digests, generation)
        _write_packed_source(_pending(packed_file, generation), snapshot, generation)
        event_ts = int(cutoff_instant(snapshot.cutoff).timestamp())
        batch = settings.feast.materialize_batch_rows
        with table.new_generation(generation, keep_current=not full) as next_generation:
            for rows in chunks(console, "materializing", len(changed), batch):
                part = snapshot.take(changed[rows])
                next_generation.write(
                    feast_format.entity_key_bytes(JOIN_KEY, part.customer_ids),
                    feast_format.double_list_bytes(part.numbers),
                    feast_format.string_list_bytes(part.labels),
                    event_ts,
                )
            next_generation.delete(feast_format.entity_key_bytes(JOIN_KEY, removed))
        _settle_side_files(settings, generation)
    instant = cutoff_instant(snapshot.cutoff)
    feast_format.record_materialization(store, view, instant, instant)
    return MaterializeReport(
        snapshot.cutoff, len(snapshot), len(changed), full, time.perf_counter() - started,
        settings.feast.online_store, len(removed), next_generation.switch_seconds, as_of,
    )  # fmt: skip


@contextmanager
def _only_run(settings: Settings) -> Iterator[None]:
    """One materialization of a store at a time; the kernel lets go of a killed run's lock."""
    path = settings.feast_dir / f"online-{settings.feast.online_store}-{settings.feast.project}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CustlensError(
                f"another `custlens features materialize` of this online store is running (it holds {path}); "
                "wait for it to end"
            ) from None
        yield


def _settle_side_files(settings: Settings, generation: str | None) -> None:
    """Put the side files of the generation the store holds in their places (a run killed right
    after its switch left them waiting) and remove those of generations it never switched to,
    and any a killed run was halfway through writing (only the run holding the lock writes them)."""
    for path in _side_files(settings):
        if generation is not None and (waiting := _pending(path, generation)).exists():
            os.replace(waiting, path)
        for stale in [*path.parent.glob(f"{path.name}.generation-*"), *path.parent.glob(f".{path.name}*.partial")]:
            stale.unlink(missing_ok=True)


def materialized_cutoff(settings: Settings) -> date | None:
    """The snapshot the online store was last switched to (its digests say), None if never."""
    path = _digest_path(settings)
    if not path.exists():
        return None
    cutoff = (pq.read_schema(path).metadata or {}).get(b"cutoff")
    return date.fromisoformat(cutoff.decode()) if cutoff else None


def _previous_digests(path: Path) -> dict[str, int] | None:
    """The customers the last generation written held, and their digests; None if unknown."""
    if not path.exists():
        return None
    previous = pq.read_table(path)
    return dict(zip(previous.column(JOIN_KEY).to_pylist(), previous.column("digest").to_pylist(), strict=True))


def _describes(path: Path, cutoff: date, generation: str | None) -> bool:
    """Whether the digests at `path` are those of `generation`, at `cutoff`."""
    metadata = pq.read_schema(path).metadata or {}
    return (
        generation is not None
        and metadata.get(b"generation") == generation.encode()
        and metadata.get(b"cutoff") == str(cutoff).encode()
    )


def _write_digests(path: Path, snapshot: PackedSnapshot, digests: np.ndarray, generation: str) -> None:
    table = pa.table({JOIN_KEY: snapshot.customer_ids, "digest": digests}).replace_schema_metadata(
        {"cutoff": str(snapshot.cutoff), "generation": generation}
    )
    with atomic_file(path) as partial:
        pq.write_table(table, partial)


def _write_packed_source(path: Path, snapshot: PackedSnapshot, generation: str) -> None:
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
    ).replace_schema_metadata({"generation": generation})
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
    # the instant day counts are taken at: the request's time when the data is fresh, else the
    # snapshot's own (the end of the data), as the batch job scores it
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
        self.freshness = Freshness(settings)

    def read(self, customer_ids: Sequence[str], request_time: datetime | None = None) -> OnlineRows:
        """The stored rows of these ids, with day counts at `request_time` (default: now) when the
        lake's data is fresh, else at the snapshot's cutoff: stale data is answered as of its end."""
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
        now = request_time or datetime.now(UTC)
        if instant_of and not self.freshness.fresh(now):
            now = max(instant_of.values())
        return OnlineRows(ids, known, stamps, numbers, labels, now)

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
        return self.features_columns_as_of(customer_ids, names, request_time)[0]

    def features_columns_as_of(
        self, customer_ids: Sequence[str], names: Sequence[str], request_time: datetime | None = None
    ) -> tuple[dict[str, np.ndarray], datetime]:
        """`features_columns` and the instant they describe (see `read`)."""
        rows = self.read(customer_ids, request_time)
        feature_time = np.array([np.nan if t is None else t.timestamp() for t in rows.feature_time], dtype="float64")
        columns = packed_columns(
            rows.customer_ids, rows.known, feature_time, rows.numbers, rows.labels, rows.request_time,
            self._plan(tuple(names)),
        )  # fmt: skip
        return columns, rows.request_time

    def _plan(self, names: tuple[str, ...]) -> FramePlan:
        if names not in self._plans:
            self._plans[names] = FramePlan.of(names)
        return self._plans[names]
