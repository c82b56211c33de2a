"""The packed feature snapshot, read offline: which cutoffs are built, the snapshot at a cutoff
as numpy rows in catalog order (what materialize loads into the online store and the batch job
scores), and packed rows turned into the features frame both paths answer with.

Training and batch scoring read snapshots here, without Feast; the online store (features/online.py)
holds the same packed rows and builds its frames with the same `packed_columns`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from custlens.errors import CustlensError
from custlens.settings import Settings
from features import layout
from features.catalog import FAMILIES, PACKED_LABELS, PACKED_NUMBERS, RECENCY_FEATURES, feature
from features.lake.tables import cutoff_instant
from features.recency import days_between_epochs

JOIN_KEY = "customer_id"
# Where each packed feature sits in a row's numbers or labels.
NUMBER_INDEX = {name: i for i, name in enumerate(PACKED_NUMBERS)}
LABEL_INDEX = {name: i for i, name in enumerate(PACKED_LABELS)}


@dataclass
class PackedSnapshot:
    """Every stored feature of every customer at one cutoff, in catalog order."""

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
    """The snapshot at `cutoff` (default: the latest), timestamps as epoch seconds."""
    available = snapshot_cutoffs(settings)
    if not available:
        raise CustlensError(f"no feature snapshots under {settings.features_dir}; run `custlens features build` first")
    cutoff = cutoff or available[-1]
    if cutoff not in available:
        raise CustlensError(
            f"no complete snapshot at {cutoff}; built cutoffs run from {available[0]} to {available[-1]}"
        )
    tables = {
        family: pq.read_table(layout.snapshot_file(family, cutoff, settings.data_dir.resolve()))
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
    columns = packed_columns(
        customer_ids, np.ones(count, dtype=bool), feature_time, snapshot.numbers[rows], snapshot.labels[rows],
        request_time, FramePlan.of(names),
    )  # fmt: skip
    return pd.DataFrame(columns, copy=False)


def packed_columns(
    customer_ids: Sequence[str],
    known: np.ndarray,
    feature_time: np.ndarray,
    numbers: np.ndarray,
    labels: Sequence[Sequence[str | None]],
    request_time: datetime,
    plan: FramePlan,
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
class FramePlan:
    """Where each feature of a service comes from in packed rows, worked out once per service.

    A step is (kind, index): "number" and "label" index the packed numbers and labels; "days"
    indexes the day counts taken from the stored timestamps at packed positions `day_counts`,
    "instant" the instants converted from packed positions `instants`.
    """

    names: tuple[str, ...]
    steps: tuple[tuple[str, int], ...]
    day_counts: list[int]
    instants: list[int]

    @classmethod
    def of(cls, names: Sequence[str]) -> FramePlan:
        steps: list[tuple[str, int]] = []
        day_counts: list[int] = []
        instants: list[int] = []
        for name in names:
            if name in RECENCY_FEATURES:
                steps.append(("days", len(day_counts)))
                day_counts.append(NUMBER_INDEX[RECENCY_FEATURES[name]])
            elif name in LABEL_INDEX:
                steps.append(("label", LABEL_INDEX[name]))
            elif feature(name).kind == "timestamp":
                steps.append(("instant", len(instants)))
                instants.append(NUMBER_INDEX[name])
            else:
                steps.append(("number", NUMBER_INDEX[name]))
        return cls(tuple(names), tuple(steps), day_counts, instants)


def _utc_instants(epoch_seconds: np.ndarray) -> pd.arrays.DatetimeArray:
    """Epoch seconds (NaN is NULL) as datetime64[us, UTC], rounded to the microsecond like
    `datetime.fromtimestamp`."""
    micros = np.where(np.isnan(epoch_seconds), np.iinfo("int64").min, np.round(epoch_seconds * 1e6))
    return pd.DatetimeIndex(micros.astype("int64").view("M8[us]"), tz=UTC).array


def sample_customer_id(settings: Settings) -> str:
    """A customer worth showing: the latest snapshot's most frequent buyer of the last year."""
    snapshot = load_packed_snapshot(settings)
    orders = snapshot.numbers[:, NUMBER_INDEX["orders_365d"]]
    if len(snapshot) == 0:
        raise CustlensError("the latest snapshot has no customers")
    return snapshot.customer_ids[int(np.nanargmax(np.nan_to_num(orders, nan=-1.0)))]
