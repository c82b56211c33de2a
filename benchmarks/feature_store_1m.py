"""Materialize 1,000,000 customers into the online store and read them back; compare with stock Feast.

Measures, in one run, against the budgets in DESIGN.md:
- `features.online.materialize(full=True)` of one snapshot of --customers customers (3 runs, median,
  each in its own process so its peak RSS is its own) against stock `FeatureStore.materialize` of
  the same five family views made `online=True`, over --stock-customers customers (extrapolated);
- `materialize` of the same cutoff again after --changed-share of the customers changed (3 runs,
  median): the nightly rebuild, where only changed customers are written, and the time the switch
  to the new generation took (the step Redis readers wait for);
- online read latency (p50/p99) of 1 and 100 random known ids: our `OnlineFeatures.read` (packed
  rows) and `.frame(ids, "churn_v1")` (every feature of the service) against stock
  `get_online_features(features=<churn_v1>, ...)`, including its on-demand view `recency`.
SQLite by default; `--redis` adds the Redis online store on 127.0.0.1:6379 (skipped if none runs).

    .venv/bin/python benchmarks/feature_store_1m.py                # SQLite, 1M customers
    .venv/bin/python benchmarks/feature_store_1m.py --redis        # SQLite and Redis
    .venv/bin/python benchmarks/feature_store_1m.py --customers 20000 --stock-customers 5000 --reads 200

Stock reads are timed over --stock-reads calls (500 by default, not --reads): at 15-100 ms a call,
2,000 of them per figure would take the --redis run past ten minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from features import layout
from features.catalog import FAMILIES, Family, family_features
from features.lake.tables import cutoff_instant

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_GENERATOR = PROJECT_ROOT / "tests" / "support" / "feature_snapshots.py"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
STORES = ("sqlite", "redis")
SERVICE = "churn_v1"
WARMUP_CALLS = 50
REPEATS = 3
SEED = 7

MATERIALIZE_BUDGET_S = 60.0
READ_BUDGET_MS = {1: 1.0, 100: 5.0}
NOISY_LOAD_AVERAGE = 1.5

# tests/support/feature_snapshots.py's synthetic_values, column by column, with numpy and Arrow instead of
# Python lists (about 20 s and 1.9 GiB at 1M customers otherwise). It draws from the generator in
# the same order, so the same seed gives the same values; `check_generator` proves it on each run.
ARROW_TYPES = {
    "count": pa.int64(),
    "number": pa.float64(),
    "timestamp": pa.timestamp("us", "UTC"),
    "category": pa.string(),
}
CATEGORY_LABELS = pa.array(["hanoi", "hcmc", "danang"], pa.string())
NULL_SHARE = 0.05
MICROS = 1_000_000


def customer_ids(count: int) -> pa.Array:
    return pa.array([f"C{i:08d}" for i in range(count)], pa.string())


def synthetic_tables(ids: pa.Array, cutoff: date, seed: int) -> dict[Family, pa.Table]:
    """One Arrow table per family, in the exact schema `write_snapshot` writes."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    instant_us = int(cutoff_instant(cutoff).timestamp()) * MICROS
    event_timestamp = pa.array(np.full(n, instant_us, dtype="int64")).cast(ARROW_TYPES["timestamp"])
    tables: dict[Family, pa.Table] = {}
    for family in FAMILIES:
        columns: dict[str, pa.Array] = {"customer_id": ids, "event_timestamp": event_timestamp}
        for feature in family_features(family):
            values: Any
            if feature.kind == "count":
                values = rng.integers(0, 20, n)
            elif feature.kind == "number":
                values = np.round(rng.gamma(2.0, 50.0, n), 3)
            elif feature.kind == "timestamp":
                days = rng.integers(1, 900, n)
                seconds = rng.integers(0, 86400, n)
                values = instant_us - (days * 86400 + seconds) * MICROS
            else:
                values = pc.take(CATEGORY_LABELS, pa.array(rng.integers(0, 3, n)))
            null = rng.random(n) < NULL_SHARE
            if isinstance(values, pa.Array):
                columns[feature.name] = pc.if_else(pa.array(null), pa.scalar(None, pa.string()), values)
            else:
                columns[feature.name] = pa.array(values, mask=null).cast(ARROW_TYPES[feature.kind])
        tables[family] = pa.table(columns)
    return tables


def write_tables(data_dir: Path, cutoff: date, tables: dict[Family, pa.Table]) -> None:
    for family, table in tables.items():
        folder = layout.family_dir(family, data_dir.resolve())
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{cutoff}.parquet")


def check_generator(scratch: Path, cutoff: date, customers: int = 2_000) -> None:
    """Stop the run unless our generator writes what tests/support/feature_snapshots.py writes, schema and values."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("feature_snapshots", REFERENCE_GENERATOR)
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)

    ids = customer_ids(customers)
    theirs, ours = scratch / "reference", scratch / "vectorized"
    reference.write_snapshot(theirs, cutoff, ids.to_pylist(), reference.synthetic_values(ids.to_pylist(), cutoff, SEED))
    write_tables(ours, cutoff, synthetic_tables(ids, cutoff, SEED))
    for family in FAMILIES:
        expected = pq.read_table(layout.family_dir(family, theirs.resolve()) / f"{cutoff}.parquet")
        actual = pq.read_table(layout.family_dir(family, ours.resolve()) / f"{cutoff}.parquet")
        if not actual.schema.equals(expected.schema, check_metadata=True):
            raise SystemExit(f"generator: {family} schema differs:\n{actual.schema}\n!=\n{expected.schema}")
        if not actual.equals(expected):
            raise SystemExit(f"generator: {family} values differ from {REFERENCE_GENERATOR}")
    shutil.rmtree(scratch)


def link_snapshot(source_dir: Path, target_dir: Path) -> None:
    """The same snapshot files under a second data dir (hard links: no copy, own Feast dir)."""
    for path in (source_dir / "features").rglob("*.parquet"):
        target = target_dir / path.relative_to(source_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


# ---------------------------------------------------------------------------------------------
# Workers: each measurement runs in its own process (own peak RSS, own GC state, and the Feast
# repo modules, which read CUSTLENS_DATA_DIR when imported, see the right data dir).


@dataclass(frozen=True)
class StoreSpec:
    data_dir: str
    project: str
    online_store: str  # sqlite | redis
    customers: int
    cutoff: str
    reads: int
    changed_share: float = 0.0  # materialize-incremental: the share of customers changed before the run
    attempt: int = 0  # materialize-incremental: which run (each changes other customers, to another value)


def _settings(spec: StoreSpec) -> Any:
    from custlens.settings import FeastSettings, Settings

    feast = FeastSettings(
        project=spec.project, online_store=spec.online_store, redis_connection_string=f"{REDIS_HOST}:{REDIS_PORT}"
    )
    return Settings(data_dir=Path(spec.data_dir), feast=feast)


def worker_materialize_ours(spec: StoreSpec) -> dict[str, Any]:
    from features.online import materialize
    from features.store import apply_definitions

    settings = _settings(spec)
    apply_definitions(settings)
    started = time.perf_counter()
    report = materialize(settings, full=True)
    seconds = time.perf_counter() - started
    if report.written != spec.customers:
        raise SystemExit(f"materialize wrote {report.written:,} customers, expected {spec.customers:,}")
    return {"seconds": seconds, "customers": report.customers, "switch_seconds": _switch_seconds(report)}


def _switch_seconds(report: Any) -> float | None:
    """How long readers took to go from one generation to the next; None before generations existed."""
    return getattr(report, "switch_seconds", None)


def change_some_customers(spec: StoreSpec) -> int:
    """Give `changed_share` of the customers (others each attempt) a new value of one number, as a
    rebuilt snapshot of the same cutoff after a new ingest would; the number of customers changed."""
    family = next(f for f in FAMILIES if any(feature.kind == "number" for feature in family_features(f)))
    name = next(feature.name for feature in family_features(family) if feature.kind == "number")
    path = layout.snapshot_file(family, date.fromisoformat(spec.cutoff), Path(spec.data_dir).resolve())
    table = pq.read_table(path)
    rng = np.random.default_rng(SEED + spec.attempt)
    chosen = pa.array(rng.random(len(table)) < spec.changed_share)
    # A value no generated row holds, another each attempt and store (the stores' snapshot files
    # start as links to the same files); a row may still hold an earlier run's value.
    value = pa.scalar(1e9 + 1000 * STORES.index(spec.online_store) + spec.attempt, pa.float64())
    before = table.column(name)
    changed = pc.and_(chosen, pc.invert(pc.fill_null(pc.equal(before, value), False)))
    partial = path.with_name(f".{path.name}.partial")
    after = table.set_column(table.schema.get_field_index(name), name, pc.if_else(chosen, value, before))
    pq.write_table(after, partial)
    os.replace(partial, path)  # a new file: the hard-linked copies of the other stores keep theirs
    return int(pc.sum(changed).as_py() or 0)


def worker_materialize_incremental(spec: StoreSpec) -> dict[str, Any]:
    """The same cutoff again after a few customers changed: only they are written (the nightly case)."""
    from features.online import materialize

    settings = _settings(spec)
    changed = change_some_customers(spec)
    started = time.perf_counter()
    report = materialize(settings)
    seconds = time.perf_counter() - started
    if report.full or report.written != changed:
        raise SystemExit(f"incremental run wrote {report.written:,} (full: {report.full}), expected {changed:,}")
    return {"seconds": seconds, "written": changed, "switch_seconds": _switch_seconds(report)}


def _stock_store(spec: StoreSpec) -> Any:
    from features.store import feature_store

    return feature_store(_settings(spec))


def worker_materialize_stock(spec: StoreSpec) -> dict[str, Any]:
    """Stock Feast: the repo's five family views, but online, materialized by Feast itself."""
    from features.repo.entities import customer
    from features.repo.feature_services import churn_v1
    from features.repo.feature_views import family_views
    from features.repo.on_demand_feature_views import recency

    views = []
    for view in family_views.values():
        online = view.__copy__()
        online.online = True
        if not online.batch_source.path.startswith(spec.data_dir):
            raise SystemExit(f"view {view.name} reads {online.batch_source.path}, not under {spec.data_dir}")
        views.append(online)
    store = _stock_store(spec)
    store.apply([customer, *views, recency, churn_v1])
    instant = cutoff_instant(date.fromisoformat(spec.cutoff))
    started = time.perf_counter()
    store.materialize(instant - timedelta(days=1), instant + timedelta(days=1), [view.name for view in views])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "customers": spec.customers}


def _id_batches(customers: int, size: int, calls: int) -> list[list[str]]:
    """Random known ids, drawn before timing starts."""
    rng = np.random.default_rng(SEED + size)
    return [[f"C{i:08d}" for i in rng.choice(customers, size, replace=False)] for _ in range(calls)]


def _latencies_ms(samples_ns: Sequence[int]) -> dict[str, float]:
    values = np.asarray(samples_ns, dtype="float64") / 1e6
    return {
        "p50": float(np.median(values)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
        "calls": len(values),
    }


def _timed(call: Callable[[list[str]], Any], batches: list[list[str]]) -> list[int]:
    samples = []
    for ids in batches:
        started = time.perf_counter_ns()
        call(ids)
        samples.append(time.perf_counter_ns() - started)
    return samples


def _freeze_heap() -> None:
    # The reader holds Feast's registry: tens of thousands of long-lived protobuf and Python
    # objects. Left in the collected heap, every gen-2 collection walks them all and a request
    # that triggers one takes 100+ ms (docs/feast-notes.md §5); the service does the same freeze.
    gc.collect()
    gc.freeze()


def worker_read_ours(spec: StoreSpec) -> dict[str, Any]:
    from features.online import OnlineFeatures

    online = OnlineFeatures(_settings(spec))
    probe = _id_batches(spec.customers, 100, 1)[0]
    if not online.read(probe).known.all():
        raise SystemExit("our online store does not know ids that were materialized")
    calls: dict[str, Callable[[list[str]], Any]] = {
        "read": online.read,
        "frame": lambda ids: online.frame(ids, SERVICE),
    }
    batches = {size: _id_batches(spec.customers, size, WARMUP_CALLS + spec.reads) for size in READ_BUDGET_MS}
    for call in calls.values():
        for size in READ_BUDGET_MS:
            for ids in batches[size][:WARMUP_CALLS]:
                call(ids)
    _freeze_heap()
    return {
        f"{name} {size}": _latencies_ms(_timed(call, batches[size][WARMUP_CALLS:]))
        for name, call in calls.items()
        for size in READ_BUDGET_MS
    }


def worker_read_stock(spec: StoreSpec) -> dict[str, Any]:
    store = _stock_store(spec)
    service = store.get_feature_service(SERVICE)

    def get_online_features(ids: list[str]) -> Any:
        now = datetime.now(UTC)  # the on-demand view `recency` needs the request time in each row
        return store.get_online_features(
            features=service, entity_rows=[{"customer_id": i, "request_ts": now} for i in ids]
        )

    probe = get_online_features(_id_batches(spec.customers, 100, 1)[0]).to_dict()
    if all(value is None for value in probe["orders_365d"]) or all(v is None for v in probe["days_since_last_order"]):
        raise SystemExit("stock Feast answers no features for ids that were materialized")
    batches = {size: _id_batches(spec.customers, size, WARMUP_CALLS + spec.reads) for size in READ_BUDGET_MS}
    for size in READ_BUDGET_MS:
        for ids in batches[size][:WARMUP_CALLS]:
            get_online_features(ids).to_df()
    _freeze_heap()
    out: dict[str, Any] = {}
    for size in READ_BUDGET_MS:
        # One loop, two clocks: the call the brief names, and turning its answer into a DataFrame
        # (what `frame` returns), so the comparison with `frame` is like for like.
        calls, to_df = [], []
        for ids in batches[size][WARMUP_CALLS:]:
            started = time.perf_counter_ns()
            response = get_online_features(ids)
            answered = time.perf_counter_ns()
            response.to_df()
            calls.append(answered - started)
            to_df.append(time.perf_counter_ns() - started)
        out[f"stock {size}"] = _latencies_ms(calls)
        out[f"stock+df {size}"] = _latencies_ms(to_df)
    return out


WORKERS: dict[str, Callable[[StoreSpec], dict[str, Any]]] = {
    "materialize-ours": worker_materialize_ours,
    "materialize-incremental": worker_materialize_incremental,
    "materialize-stock": worker_materialize_stock,
    "read-ours": worker_read_ours,
    "read-stock": worker_read_stock,
}


@dataclass
class Runner:
    """Runs workers one at a time and notes how busy the machine was after each."""

    console: Console
    load_averages: list[float]

    def __call__(self, name: str, spec: StoreSpec) -> dict[str, Any]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("CUSTLENS_")}
        env[layout.DATA_DIR_VARIABLE] = spec.data_dir
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--spec", json.dumps(spec.__dict__)]
        with self.console.status(f"{name} ({spec.online_store}, {spec.customers:,} customers)"):
            # cwd: Feast names the repo's modules by their path relative to the working directory.
            completed = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
        self.load_averages.append(os.getloadavg()[0])
        if completed.returncode != 0:
            sys.stderr.write(completed.stdout + completed.stderr)
            raise SystemExit(f"worker {name} failed (exit {completed.returncode})")
        line = next(line for line in reversed(completed.stdout.splitlines()) if line.startswith("RESULT "))
        return dict(json.loads(line.removeprefix("RESULT ")))


def worker_main(name: str, spec_json: str) -> None:
    result = WORKERS[name](StoreSpec(**json.loads(spec_json)))
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# The run


def redis_is_running() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5):
            return True
    except OSError:
        return False


def delete_redis_project(project: str) -> int:
    """Feast's Redis keys are the entity key followed by the project name."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    deleted, batch = 0, []
    for key in client.scan_iter(match=b"*" + project.encode(), count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            deleted += cast(int, client.unlink(*batch))
            batch = []
    if batch:
        deleted += cast(int, client.unlink(*batch))
    return deleted


@dataclass
class Row:
    store: str
    figure: str
    value: str
    budget: str = ""
    passed: bool | None = None


def verdict(passed: bool | None) -> str:
    if passed is None:
        return ""
    return "[green]PASS[/green]" if passed else "[bold red]FAIL[/bold red]"


def _switch(run: dict[str, Any]) -> str:
    """How long the run's switch to the new generation took, where the code has one."""
    seconds = run.get("switch_seconds")
    return "" if seconds is None else f"  switch {seconds * 1000:,.0f} ms"


def bench_store(kind: str, args: argparse.Namespace, dirs: dict[str, Path], tag: str, run_worker: Runner) -> list[Row]:
    console = run_worker.console
    cutoff = str(args.cutoff)
    ours = StoreSpec(str(dirs["ours"]), f"bench_{tag}", kind, args.customers, cutoff, args.reads)
    stock = StoreSpec(str(dirs["stock"]), f"stock_{tag}", kind, args.stock_customers, cutoff, args.stock_reads)
    console.rule(f"{kind}: ours project {ours.project}, stock project {stock.project}")

    runs = []
    for attempt in range(1, REPEATS + 1):
        run = run_worker("materialize-ours", ours)
        runs.append(run)
        console.print(
            f"ours  materialize run {attempt}: {run['seconds']:6.1f} s  {args.customers / run['seconds']:>9,.0f} cust/s"
            f"  peak {run['peak_mib']:6,.0f} MiB" + _switch(run)
        )
    ours_s = statistics.median(run["seconds"] for run in runs)
    ours_rate = args.customers / ours_s
    ours_peak = max(run["peak_mib"] for run in runs)

    incremental = []
    for attempt in range(1, REPEATS + 1):
        spec = StoreSpec(**(ours.__dict__ | {"changed_share": args.changed_share, "attempt": attempt}))
        run = run_worker("materialize-incremental", spec)
        incremental.append(run)
        console.print(
            f"ours  incremental run {attempt}: {run['seconds']:6.1f} s  {run['written']:>9,} written"
            f"  peak {run['peak_mib']:6,.0f} MiB" + _switch(run)
        )
    incremental_s = statistics.median(run["seconds"] for run in incremental)

    stock_run = run_worker("materialize-stock", stock)
    stock_rate = args.stock_customers / stock_run["seconds"]
    stock_extrapolated = args.customers / stock_rate
    console.print(
        f"stock materialize:       {stock_run['seconds']:6.1f} s  {stock_rate:>9,.0f} cust/s"
        f"  peak {stock_run['peak_mib']:6,.0f} MiB  ({args.stock_customers:,} customers; "
        f"{args.customers:,} extrapolated: {stock_extrapolated:,.0f} s)"
    )

    reads = run_worker("read-ours", ours) | run_worker("read-stock", stock)
    for name, figures in reads.items():
        if isinstance(figures, dict):
            console.print(
                f"{name:<14} p50 {figures['p50']:8.3f} ms  p99 {figures['p99']:8.3f} ms  max {figures['max']:8.2f} ms"
            )

    rows = [
        Row(
            kind,
            f"materialize {args.customers:,}, ours (median of {REPEATS}: "
            + ", ".join(f"{run['seconds']:.1f}" for run in runs)
            + " s)",
            f"{ours_s:.1f} s",
            f"<= {MATERIALIZE_BUDGET_S:.0f} s",
            ours_s <= MATERIALIZE_BUDGET_S,
        ),
        Row(kind, "  ours throughput / peak RSS", f"{ours_rate:,.0f} cust/s / {ours_peak:,.0f} MiB"),
        Row(
            kind,
            f"materialize again, {args.changed_share:.0%} changed, ours (median of {REPEATS}: "
            + ", ".join(f"{run['seconds']:.1f}" for run in incremental)
            + " s)",
            f"{incremental_s:.1f} s",
        ),
        Row(
            kind,
            f"materialize {args.stock_customers:,}, stock Feast",
            f"{stock_run['seconds']:.1f} s ({stock_rate:,.0f} cust/s, {stock_run['peak_mib']:,.0f} MiB)",
        ),
        Row(
            kind,
            f"  stock {args.customers:,}, EXTRAPOLATED",
            f"{stock_extrapolated:,.0f} s",
            f"<= {MATERIALIZE_BUDGET_S:.0f} s",
            stock_extrapolated <= MATERIALIZE_BUDGET_S,
        ),
        Row(kind, "  ratio customers/s ours / stock", f"{ours_rate / stock_rate:,.1f}x"),
    ]
    for size, budget in READ_BUDGET_MS.items():
        stock_p99 = reads[f"stock {size}"]["p99"]
        for name in ("read", "frame"):
            figures = reads[f"{name} {size}"]
            rows.append(
                Row(
                    kind,
                    f"{name}({size} id{'s' if size > 1 else ''}) ours p50 / p99, {args.reads:,} calls",
                    f"{figures['p50']:.3f} / {figures['p99']:.3f} ms",
                    f"p99 <= {budget:g} ms",
                    figures["p99"] <= budget,
                )
            )
        rows.append(
            Row(
                kind,
                f"get_online_features({size}) stock p50 / p99, {args.stock_reads:,} calls",
                f"{reads[f'stock {size}']['p50']:.3f} / {stock_p99:.3f} ms",
                f"p99 <= {budget:g} ms",
                stock_p99 <= budget,
            )
        )
        rows.append(
            Row(
                kind,
                "  stock + .to_df() p50 / p99",
                f"{reads[f'stock+df {size}']['p50']:.3f} / {reads[f'stock+df {size}']['p99']:.3f} ms",
            )
        )
        rows.append(
            Row(
                kind,
                "  p99 ratio stock / ours read, stock / ours frame",
                f"{stock_p99 / reads[f'read {size}']['p99']:,.1f}x, {stock_p99 / reads[f'frame {size}']['p99']:,.1f}x",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers materialized by our path")
    parser.add_argument("--stock-customers", type=int, default=100_000, help="customers materialized by stock Feast")
    parser.add_argument(
        "--changed-share", type=float, default=0.01, help="share of customers changed before each incremental run"
    )
    parser.add_argument("--work", type=Path, default=Path("bench-out/feature-store"), help="scratch folder (wiped)")
    parser.add_argument("--redis", action="store_true", help=f"also measure Redis on {REDIS_HOST}:{REDIS_PORT}")
    parser.add_argument("--reads", type=int, default=2000, help="timed calls per read figure (after 50 warm-up)")
    parser.add_argument("--stock-reads", type=int, default=500, help="timed calls per stock read figure")
    parser.add_argument("--keep", action="store_true", help="keep the snapshots and online stores under --work")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.spec)
        return

    console = Console()
    if not console.is_terminal:  # a log file: wide enough that the summary table does not wrap
        console = Console(width=150)
    started = time.perf_counter()
    args.cutoff = datetime.now(UTC).date().replace(day=1)
    tag = uuid.uuid4().hex[:8]
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    console.print(
        f"feature store benchmark: {args.customers:,} customers (stock Feast: {args.stock_customers:,}), "
        f"cutoff {args.cutoff}, {args.reads:,} reads per figure ({args.stock_reads:,} for stock Feast), "
        f"{os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )

    setup_started = time.perf_counter()
    check_generator(work / "generator-check", args.cutoff)
    snapshots = {"ours": work / "ours" / "sqlite", "stock": work / "stock" / "sqlite"}
    write_tables(snapshots["ours"], args.cutoff, synthetic_tables(customer_ids(args.customers), args.cutoff, SEED))
    write_tables(
        snapshots["stock"], args.cutoff, synthetic_tables(customer_ids(args.stock_customers), args.cutoff, SEED)
    )
    console.print(
        f"setup (not a measured figure): generator checked against {REFERENCE_GENERATOR.name}, snapshots written "
        f"in {time.perf_counter() - setup_started:.1f} s"
    )

    kinds = ["sqlite"]
    if args.redis:
        if redis_is_running():
            kinds.append("redis")
        else:
            console.print(f"[yellow]--redis: no Redis server on {REDIS_HOST}:{REDIS_PORT}; Redis skipped[/yellow]")

    rows: list[Row] = []
    run_worker = Runner(console, [os.getloadavg()[0]])
    try:
        for kind in kinds:
            dirs = {side: path.parent / kind for side, path in snapshots.items()}
            for side, path in snapshots.items():
                if dirs[side] != path:
                    link_snapshot(path, dirs[side])
            rows += bench_store(kind, args, dirs, tag, run_worker)
    finally:
        if "redis" in kinds:
            deleted = sum(delete_redis_project(f"{side}_{tag}") for side in ("bench", "stock"))
            console.print(f"Redis: deleted {deleted:,} keys of projects bench_{tag} and stock_{tag}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"feature store, {args.customers:,} customers: ours vs stock Feast")
    for column in ("store", "figure", "value", "budget", "result"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in rows:
        table.add_row(row.store, row.figure, row.value, row.budget, verdict(row.passed))
    console.print(table)
    console.print(
        "Stock materialize is measured on fewer customers and extrapolated linearly; stock reads run against "
        f"its {args.stock_customers:,}-customer store, ours against {args.customers:,}."
    )
    # This run keeps about one core busy; a 1-minute load average well above that is someone else's work.
    busiest = max(run_worker.load_averages)
    if busiest > NOISY_LOAD_AVERAGE:
        console.print(
            f"[yellow]Noisy: the 1-minute load average reached {busiest:.2f} on {os.cpu_count()} cores "
            "(other processes competed for the CPU); repeat on a quiet machine before trusting tails.[/yellow]"
        )
    console.print(
        f"Load averages after each step: {', '.join(f'{load:.1f}' for load in run_worker.load_averages)}. "
        f"Total {time.perf_counter() - started:.0f} s; output {'kept in ' + str(work) if args.keep else 'removed'}."
    )


if __name__ == "__main__":
    main()
