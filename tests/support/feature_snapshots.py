"""Hand-made feature snapshots in the exact layout `custlens features build` writes, so the
Feast tests do not depend on the snapshot SQL (which has tests of its own)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features import layout
from features.catalog import FAMILIES, family_features
from features.lake.tables import cutoff_instant

ARROW_TYPES = {
    "count": pa.int64(),
    "number": pa.float64(),
    "timestamp": pa.timestamp("us", "UTC"),
    "category": pa.string(),
}


def synthetic_values(customer_ids: list[str], cutoff: date, seed: int) -> dict[str, list]:
    """Deterministic, plausible values for every stored feature (some NULLs included)."""
    rng = np.random.default_rng(seed)
    n = len(customer_ids)
    instant = cutoff_instant(cutoff)
    values: dict[str, list] = {}
    for family in FAMILIES:
        for feature in family_features(family):
            if feature.kind == "count":
                column: list = rng.integers(0, 20, n).tolist()
            elif feature.kind == "number":
                column = np.round(rng.gamma(2.0, 50.0, n), 3).tolist()
            elif feature.kind == "timestamp":
                days = rng.integers(1, 900, n)
                seconds = rng.integers(0, 86400, n)
                column = [instant - timedelta(days=int(d), seconds=int(s)) for d, s in zip(days, seconds, strict=True)]
            else:
                column = [["hanoi", "hcmc", "danang"][k] for k in rng.integers(0, 3, n)]
            for i in np.flatnonzero(rng.random(n) < 0.05):
                column[i] = None
            values[feature.name] = column
    return values


def write_snapshot(data_dir: Path, cutoff: date, customer_ids: list[str], values: dict[str, list]) -> None:
    for family in FAMILIES:
        folder = layout.family_dir(family, data_dir.resolve())
        folder.mkdir(parents=True, exist_ok=True)
        columns = {
            "customer_id": pa.array(customer_ids, pa.string()),
            "event_timestamp": pa.array([cutoff_instant(cutoff)] * len(customer_ids), pa.timestamp("us", "UTC")),
        }
        for feature in family_features(family):
            columns[feature.name] = pa.array(values[feature.name], ARROW_TYPES[feature.kind])
        pq.write_table(pa.table(columns), folder / f"{cutoff}.parquet")


def now_utc() -> datetime:
    return datetime.now(UTC)
