"""Time `kpis()` (the daily KPI cube) for random periods and groupings against `kpis_direct()` (a
scan of the lake) in the same run, and print p50/p99 of each and their ratio. Budget: p99 <= 100 ms
at 1,000,000 customers. Every answer of the direct scan is also compared with the cube's.

The lake is only read: the cube is built in a work folder whose `lake` links to it. The groupings
by segment need a batch scoring run's segments: the benchmark makes up one per customer (seeded,
RFM and behavioural names, a predicted value), builds the segment cubes from them the way
`custlens score` does, and says so; the query path is the real one.

    .venv/bin/python benchmarks/kpis_1m.py --lake /work/bench-1m/data/lake
    .venv/bin/python benchmarks/kpis_1m.py --lake data/lake --queries 300 --direct-queries 20
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from custlens.settings import load_settings
from features.kpis import (
    GROUPINGS,
    CubeMeta,
    KpiCache,
    KpiTable,
    build_kpi_cube,
    build_segment_cubes,
    kpis,
    kpis_direct,
)
from training.segments import RFM_SEGMENTS


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def questions(first: date, last: date, count: int, seed: int) -> list[tuple[date, date, str | None]]:
    """Random periods (a day to the whole history) with every grouping, in turn."""
    rng = random.Random(seed)
    span = (last - first).days
    asked = []
    for number in range(count):
        start = first + timedelta(days=rng.randrange(0, span + 1))
        end = min(last, start + timedelta(days=rng.choice((0, 6, 30, 90, 365, span))))
        groupings: list[str | None] = [None, *GROUPINGS]
        asked.append((start, end, groupings[number % len(groupings)]))
    return asked


def made_up_segments(lake: Path, seed: int) -> pd.DataFrame:
    """A segment and a predicted value per customer of the lake, as a batch run would write them."""
    ids = pq.read_table(lake / "customers.parquet", columns=["customer_id"]).column(0).to_numpy(zero_copy_only=False)
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": ids,
        "rfm_segment": np.asarray(RFM_SEGMENTS, dtype=object)[rng.integers(0, len(RFM_SEGMENTS), len(ids))],
        "behavioural_segment": np.asarray(BEHAVIOURS, dtype=object)[rng.integers(0, len(BEHAVIOURS), len(ids))],
        "predicted_clv": rng.gamma(0.8, 1.5e6, len(ids)),
    })  # fmt: skip


BEHAVIOURS = ("Deal seekers", "High-value loyal", "Lapsing", "New customers", "Support-heavy")


def agree(cube: KpiTable, direct: KpiTable) -> bool:
    if cube.groups != direct.groups:
        return False
    for fast, slow in zip(cube.values, direct.values, strict=True):
        if fast.missing != slow.missing:
            return False
        if slow.value is not None and not math.isclose(fast.value or 0.0, slow.value, rel_tol=1e-9, abs_tol=1e-9):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, required=True, help="An ingested lake folder (read only).")
    parser.add_argument("--queries", type=int, default=500, help="Questions asked of the cube.")
    parser.add_argument("--direct-queries", type=int, default=10, help="Of those, asked of the direct scan too.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kpis-bench-"))
    try:
        (work / "lake").symlink_to(args.lake.resolve(), target_is_directory=True)
        settings = load_settings().model_copy(update={"data_dir": work})
        with duckdb.connect() as con:
            row = con.execute(
                f"SELECT count(*) FROM read_parquet('{args.lake.resolve() / 'customers.parquet'}')"
            ).fetchone()
        customers = int(row[0]) if row else 0
        started = time.perf_counter()
        cube_dir = build_kpi_cube(settings)
        build_seconds = time.perf_counter() - started
        size = sum(path.stat().st_size for path in cube_dir.iterdir())
        print(f"lake {args.lake}: {customers:,} customers")
        print(f"cube built in {build_seconds:.1f} s, {size / 1e6:.1f} MB in {cube_dir}")

        started = time.perf_counter()
        build_segment_cubes(settings, made_up_segments(args.lake, args.seed), date.today())
        print(f"segment cubes (made-up segments for every customer) built in {time.perf_counter() - started:.1f} s")

        meta = CubeMeta.read(cube_dir / "meta.json")
        asked = questions(meta.first_day, meta.last_day, args.queries, args.seed)
        cache = KpiCache()  # one for the run, as a service worker holds one
        for by in (None, *GROUPINGS):  # load each cube into memory once, as a serving process would
            kpis(settings, meta.first_day, meta.first_day, by, cache)  # type: ignore[arg-type]
        cube_ms: list[float] = []
        for start, end, by in asked:
            began = time.perf_counter()
            kpis(settings, start, end, by, cache)  # type: ignore[arg-type]
            cube_ms.append((time.perf_counter() - began) * 1000)
        direct_ms: list[float] = []
        disagreements = 0
        for start, end, by in asked[: args.direct_queries]:
            began = time.perf_counter()
            direct = kpis_direct(settings, start, end, by)  # type: ignore[arg-type]
            direct_ms.append((time.perf_counter() - began) * 1000)
            disagreements += not agree(kpis(settings, start, end, by, cache), direct)  # type: ignore[arg-type]

        def line(name: str, values: list[float]) -> str:
            return (
                f"{name:<12} n={len(values):>4}  p50 {statistics.median(values):9.1f} ms  "
                f"p99 {percentile(values, 0.99):9.1f} ms  max {max(values):9.1f} ms"
            )

        print(line("kpis()", cube_ms))
        print(line("direct scan", direct_ms))
        ratio = statistics.median(direct_ms) / statistics.median(cube_ms)
        print(f"ratio (direct p50 / cube p50): {ratio:,.0f}x")
        verdict = "within" if percentile(cube_ms, 0.99) <= 100 else "OVER"
        print(f"budget p99 <= 100 ms: {verdict}; cube and direct scan disagree on {disagreements} question(s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
