"""Generate and ingest N customers (1,000,000 by default); print time and peak memory of each step.

Each step runs in its own process so its peak RSS is its own. In the same run, identity
resolution (scipy connected components over the id-contact graph) is compared with the naive
path, a pure-Python union-find over the same normalized contacts. With --compare-with REF the same
exports are also ingested by the code of an earlier commit (checked out in a scratch worktree), so a
change to ingest is measured against what it replaces on the same machine in the same run:

    .venv/bin/python benchmarks/ingest_1m.py --customers 1000000 --work /tmp/custlens-bench
    .venv/bin/python benchmarks/ingest_1m.py --compare-with 8d16eb3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

STEP = textwrap.dedent(
    """
    import json, resource, sys, time
    started = time.perf_counter()
    {body}
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("STEP " + json.dumps({{"seconds": seconds, "peak_mib": peak_mib, **extra}}))
    """
)


def run_step(name: str, body: str, env: dict[str, str]) -> dict:
    code = STEP.format(body=textwrap.indent(textwrap.dedent(body), "").strip())
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"step {name} failed")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("STEP "))
    figures = json.loads(line.removeprefix("STEP "))
    figures["wall_seconds"] = time.perf_counter() - started
    print(f"{name:<28} {figures['seconds']:8.1f} s   peak {figures['peak_mib']:8.0f} MiB", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dirty-rate", type=float, default=0.01)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--work", type=Path, default=Path("bench-out/ingest"))
    parser.add_argument("--keep", action="store_true", help="keep the generated data and lake")
    parser.add_argument("--compare-with", metavar="REF", help="also ingest with the code of this git commit")
    parser.add_argument("--reuse-sample", action="store_true", help="ingest the exports a previous run left in --work")
    args = parser.parse_args()

    work = args.work.resolve()
    sample = work / "data" / "sample"
    reuse = args.reuse_sample and (sample / "customers.csv").exists()
    if reuse:
        for stale in ("lake", "quarantine", "reports", "kpis"):
            shutil.rmtree(work / "data" / stale, ignore_errors=True)
        shutil.rmtree(work / "data-before", ignore_errors=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    env = {**os.environ, "CUSTLENS_DATA_DIR": str(work / "data"), "CUSTLENS_PII_SALT": "benchmark-salt"}
    print(f"custlens ingest benchmark: {args.customers:,} customers, {args.format}, dirty rate {args.dirty_rate}")

    results = {}
    results["generate"] = (
        {"rows": _rows(sample)}
        if reuse
        else run_step(
            "generate",
            f"""
        from pathlib import Path
        from features.sample.generate import DEFAULT_END, generate
        summary = generate(out_dir=Path({str(sample)!r}), customers={args.customers}, seed={args.seed},
                           start=None, end=DEFAULT_END, dirty_rate={args.dirty_rate}, file_format={args.format!r})
        extra = {{"rows": dict(summary.rows)}}
        """,
            env,
        )
    )
    results["ingest"] = run_step(
        "ingest",
        f"""
        from pathlib import Path
        from custlens.settings import PROJECT_ROOT, load_settings
        from features.lake.ingest import ingest
        report = ingest(load_settings(PROJECT_ROOT / "configs" / "sample.yaml"), Path({str(sample)!r}))
        extra = {{}}
        """,
        env,
    )
    if args.compare_with:
        results["ingest_before"] = _ingest_with(args.compare_with, sample, work, env)
        before, now = results["ingest_before"], results["ingest"]
        print(
            f"ingest now {now['seconds']:.1f} s / {now['peak_mib']:,.0f} MiB; at {args.compare_with} "
            f"{before['seconds']:.1f} s / {before['peak_mib']:,.0f} MiB -> "
            f"time x{now['seconds'] / before['seconds']:.2f}, "
            f"peak x{now['peak_mib'] / before['peak_mib']:.2f}"
        )
    results["identity"] = run_step(
        "identity",
        f"""
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from ingest_naive import compare_identity
        extra = compare_identity({str(sample / "customers.csv")!r})
        """,
        env,
    )
    identity = results["identity"]
    print(
        f"identity resolution of {identity['source_ids']:,} source ids: ours {identity['ours_s']:.2f} s, "
        f"naive pure-Python union-find {identity['naive_s']:.2f} s -> {identity['naive_s'] / identity['ours_s']:.1f}x; "
        f"same number of customers: {identity['same_partition']}"
    )

    rows = results["generate"].get("rows", {})
    total_rows = sum(rows.values())
    ingest_seconds = results["ingest"]["seconds"]
    print()
    print(f"rows generated: {total_rows:,} ({', '.join(f'{k} {v:,}' for k, v in rows.items())})")
    print(f"ingest throughput: {total_rows / ingest_seconds:,.0f} rows/s")
    report = json.loads((work / "data" / "reports" / "ingest_report.json").read_text(encoding="utf-8"))
    linked = report["identity"]
    print(f"customers in lake: {linked['customers']:,} from {linked['source_ids']:,} source ids")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _rows(sample: Path) -> dict[str, int]:
    """Data rows of each export a previous run left (the generate step's count)."""
    import duckdb

    return {
        path.stem: duckdb.sql(f"SELECT count(*) FROM read_csv('{path}', all_varchar = true)").fetchone()[0]
        for path in sorted(sample.glob("*.csv"))
    }


def _ingest_with(ref: str, sample: Path, work: Path, env: dict[str, str]) -> dict:
    """The ingest step run by the code of commit `ref` (a detached worktree) on the same exports."""
    root = Path(__file__).resolve().parents[1]
    checkout = work / "before"
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(checkout), ref], check=True,
                   capture_output=True)  # fmt: skip
    try:
        before_env = {**env, "PYTHONPATH": str(checkout), "CUSTLENS_DATA_DIR": str(work / "data-before")}
        return run_step(
            f"ingest at {ref}",
            f"""
            import sys
            sys.path.insert(0, {str(checkout)!r})
            from pathlib import Path
            from custlens.settings import load_settings
            from features.lake.ingest import ingest
            ingest(load_settings(), Path({str(sample)!r}))
            extra = {{}}
            """,
            before_env,
        )
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(checkout)], capture_output=True)


if __name__ == "__main__":
    main()
