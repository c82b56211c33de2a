"""Time the feature snapshot of every customer at one cutoff, against a naive pandas path.

Each path runs in its own process, so its peak RSS is its own. Ours builds all six families
(features/snapshots.py, DuckDB; the btyd family fits BG/NBD and Gamma-Gamma on a sample of at most
features.btyd.FIT_SAMPLE_CUSTOMERS buyers and scores everyone, its share is printed); the naive
path reads the lake into pandas, filters by the cutoff and groups by customer, for the purchases
and engagement families only. Both write their purchases and engagement features, which are
compared value by value at the end.

    .venv/bin/python benchmarks/features_1m.py --lake /path/to/data/lake --cutoff 2025-01-01
    .venv/bin/python benchmarks/features_1m.py --customers 1000000   # generate and ingest first
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalog import Family

OWN_ACTIONS = (
    "session_start", "page_view", "bounce", "add_to_cart", "checkout_start", "email_open", "email_click",
    "app_open", "social_share", "referral", "review",
)  # fmt: skip
COMPARED_FAMILIES: tuple[Family, ...] = ("purchases", "engagement")
SAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sample.yaml"


# ---------------------------------------------------------------- the two paths (run in a child process)


def ours(data_dir: Path, cutoff: date) -> dict:
    from custlens.settings import load_settings
    from features import layout, snapshots

    # the btyd family's share of the build: its fit and scoring, timed where the build calls it
    fit_and_score = snapshots.family_at
    spent: list[float] = []

    def timed(*args: object) -> object:
        started = time.perf_counter()
        try:
            return fit_and_score(*args)  # type: ignore[arg-type]
        finally:
            spent.append(time.perf_counter() - started)

    snapshots.family_at = timed  # type: ignore[assignment]
    settings = load_settings().model_copy(update={"data_dir": data_dir})
    report = snapshots.build_snapshots(settings, [cutoff])
    fit = json.loads(layout.btyd_fit_file(cutoff, data_dir).read_text())
    return {"customers": report.customers[cutoff], "btyd_seconds": sum(spent), "btyd_fitted_on": fit["fitted_on"],
            "btyd_unfitted": fit["unfitted"]}  # fmt: skip


def naive(data_dir: Path, cutoff: date) -> dict:
    """purchases and engagement the way a notebook would: whole tables into pandas, then groupby."""
    lake, out = data_dir / "lake", data_dir / "naive"
    out.mkdir(parents=True, exist_ok=True)
    at = pd.Timestamp(datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC))
    since = {days: at - timedelta(days=days) for days in (30, 90, 180, 365)}

    customers = pd.read_parquet(lake / "customers.parquet", columns=["customer_id", "signup_at"])
    orders = pd.read_parquet(lake / "orders.parquet")
    orders = orders[orders["ordered_at"] < at]
    population = pd.Index(
        sorted(set(customers.loc[customers["signup_at"] < at, "customer_id"]) | set(orders["customer_id"])),
        name="customer_id",
    )
    del customers
    purchases = _naive_purchases(orders, population, since)
    del orders
    purchases.reset_index().to_parquet(out / "purchases.parquet")

    events = pd.read_parquet(
        lake / "engagement_events.parquet",
        columns=["customer_id", "occurred_at", "event_type", "session_id", "page_views"],
    )
    events = events[events["occurred_at"] < at]
    engagement = _naive_engagement(events, population, since)
    del events
    engagement.reset_index().to_parquet(out / "engagement.parquet")
    return {"customers": len(population)}


def _naive_purchases(orders: pd.DataFrame, population: pd.Index, since: dict[int, pd.Timestamp]) -> pd.DataFrame:
    for column in ("net_amount", "gross_amount", "discount_amount"):
        orders[column] = orders[column].astype(float)
    completed = orders[orders["status"] == "completed"].sort_values(["customer_id", "ordered_at"])
    by_customer = completed.groupby("customer_id")
    result = pd.DataFrame(index=population)
    result["first_order_at"] = by_customer["ordered_at"].min()
    result["last_order_at"] = by_customer["ordered_at"].max()
    for days in (30, 90, 365):
        recent = completed[completed["ordered_at"] >= since[days]].groupby("customer_id")
        result[f"orders_{days}d"] = recent.size()
        result[f"revenue_{days}d"] = recent["net_amount"].sum()
    result["orders_lifetime"] = by_customer.size()
    result["revenue_lifetime"] = by_customer["net_amount"].sum()
    last_year = completed[completed["ordered_at"] >= since[365]]
    result["categories_365d"] = last_year.groupby("customer_id")["category"].nunique()
    result["channels_365d"] = last_year.groupby("customer_id")["channel"].nunique()
    result["avg_order_value"] = by_customer["net_amount"].mean()
    gaps = by_customer["ordered_at"].diff().dt.total_seconds() / 86400
    result["mean_days_between_orders"] = gaps.groupby(completed["customer_id"]).mean()
    result["std_days_between_orders"] = gaps.groupby(completed["customer_id"]).std()
    all_last_year = orders[orders["ordered_at"] >= since[365]]
    status_counts = all_last_year.groupby(["customer_id", "status"]).size().unstack(fill_value=0)
    for status in ("completed", "returned", "cancelled"):
        if status not in status_counts:
            status_counts[status] = 0
    kept_or_returned = status_counts["completed"] + status_counts["returned"]
    result["return_rate_365d"] = status_counts["returned"] / kept_or_returned.replace(0, np.nan)
    result["cancellation_rate_365d"] = status_counts["cancelled"] / status_counts.sum(axis=1).replace(0, np.nan)
    priced = last_year.dropna(subset=["gross_amount", "discount_amount"]).groupby("customer_id")
    result["discount_share_365d"] = priced["discount_amount"].sum() / priced["gross_amount"].sum().replace(0, np.nan)
    previous = completed[(completed["ordered_at"] >= since[180]) & (completed["ordered_at"] < since[90])]
    previous_orders = previous.groupby("customer_id").size().reindex(population, fill_value=0)
    previous_revenue = previous.groupby("customer_id")["net_amount"].sum().reindex(population, fill_value=0)
    counts = [f"orders_{days}d" for days in (30, 90, 365)] + ["orders_lifetime", "categories_365d", "channels_365d"]
    sums = [f"revenue_{days}d" for days in (30, 90, 365)] + ["revenue_lifetime"]
    result[counts + sums] = result[counts + sums].fillna(0)
    result["orders_trend_90d"] = result["orders_90d"] - previous_orders
    result["revenue_trend_90d"] = result["revenue_90d"] - previous_revenue
    return result


def _naive_engagement(events: pd.DataFrame, population: pd.Index, since: dict[int, pd.Timestamp]) -> pd.DataFrame:
    result = pd.DataFrame(index=population)
    own = events[events["event_type"].isin(OWN_ACTIONS)]
    result["last_engagement_at"] = own.groupby("customer_id")["occurred_at"].max()
    per_window = {}
    for days in (30, 90):
        recent = events[events["occurred_at"] >= since[days]]
        counts = recent.groupby(["customer_id", "event_type"]).size().unstack(fill_value=0)
        counts = counts.reindex(index=population, fill_value=0)
        pages = recent[recent["event_type"] == "session_start"].groupby("customer_id")["page_views"].sum()
        counts["pages"] = pages.reindex(population, fill_value=0)
        per_window[days] = counts

    def count(days: int, event_type: str) -> pd.Series:
        counts = per_window[days]
        return counts[event_type] if event_type in counts else pd.Series(0, index=population)

    for days in (30, 90):
        result[f"sessions_{days}d"] = count(days, "session_start")
        result[f"page_views_{days}d"] = count(days, "page_view") + per_window[days]["pages"]
        result[f"add_to_cart_{days}d"] = count(days, "add_to_cart")
        result[f"app_opens_{days}d"] = count(days, "app_open")
        sent = count(days, "email_sent").replace(0, np.nan)
        result[f"email_open_rate_{days}d"] = count(days, "email_open") / sent
        result[f"email_click_rate_{days}d"] = count(days, "email_click") / sent
    result["email_unsubscribes_90d"] = count(90, "email_unsubscribe")
    result["email_spam_reports_90d"] = count(90, "email_spam_report")
    result["social_shares_90d"] = count(90, "social_share")
    result["referrals_90d"] = count(90, "referral")
    result["bounce_rate_90d"] = count(90, "bounce") / count(90, "session_start").replace(0, np.nan)
    result["sms_delivery_rate_90d"] = count(90, "sms_delivered") / count(90, "sms_sent").replace(0, np.nan)
    carts = events[
        (events["occurred_at"] >= since[90])
        & events["session_id"].notna()
        & events["event_type"].isin(["add_to_cart", "checkout_start"])
    ]
    sessions = (
        carts.assign(carted=carts["event_type"] == "add_to_cart", checked_out=carts["event_type"] == "checkout_start")
        .groupby(["customer_id", "session_id"])[["carted", "checked_out"]]
        .any()
    )
    sessions = sessions[sessions["carted"]].reset_index()
    per_customer = sessions.groupby("customer_id").agg(
        carted=("carted", "size"), abandoned=("checked_out", lambda checked: int((~checked).sum()))
    )
    result["cart_abandonment_rate_90d"] = per_customer["abandoned"] / per_customer["carted"]
    return result


PATHS = {"ours": ours, "naive": naive}


def run_child(path: str, data_dir: Path, cutoff: date) -> dict:
    started = time.perf_counter()
    figures = PATHS[path](data_dir, cutoff)
    figures["seconds"] = time.perf_counter() - started
    figures["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


# ---------------------------------------------------------------- the parent: prepare, run, compare


def run_step(name: str, args: list[str], env: dict[str, str]) -> dict:
    completed = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"step {name} failed")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("STEP "))
    figures = json.loads(line.removeprefix("STEP "))
    print(f"  {name:<34} {figures['seconds']:8.1f} s   peak {figures['peak_mib']:8,.0f} MiB", flush=True)
    return figures


def prepare_lake(work: Path, customers: int, seed: int, env: dict[str, str]) -> Path:
    """Generate and ingest `customers` customers under work/data; return the lake folder."""
    code = (
        "from pathlib import Path\n"
        "from custlens.settings import load_settings\n"
        "from features.sample.generate import DEFAULT_END, generate\n"
        "from features.lake.ingest import ingest\n"
        f"sample = Path({str(work / 'data' / 'sample')!r})\n"
        f"generate(out_dir=sample, customers={customers}, seed={seed}, start=None, end=DEFAULT_END, "
        "dirty_rate=0.0, file_format='parquet')\n"
        # the generated sample's own config: its times are local to its business's time zone
        f"ingest(load_settings({str(SAMPLE_CONFIG)!r}), sample)\n"
    )
    print(f"generating and ingesting {customers:,} customers into {work / 'data'} ...", flush=True)
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return work / "data" / "lake"


def default_cutoff(data_dir: Path) -> date:
    from custlens.settings import load_settings
    from features.snapshots import default_cutoffs

    settings = load_settings().model_copy(update={"data_dir": data_dir})
    features = settings.features.model_copy(update={"include_today": False})
    return default_cutoffs(settings.model_copy(update={"features": features}))[-1]


def compare(data_dir: Path, cutoff: date) -> None:
    """Largest difference between the two paths' values, per family (NULL must match NULL)."""
    from custlens.settings import load_settings
    from features.snapshots import snapshot_path

    settings = load_settings().model_copy(update={"data_dir": data_dir})
    for family in COMPARED_FAMILIES:
        ours_frame = pd.read_parquet(snapshot_path(settings, family, cutoff)).set_index("customer_id")
        naive_frame = pd.read_parquet(data_dir / "naive" / f"{family}.parquet").set_index("customer_id")
        assert ours_frame.index.equals(naive_frame.index), f"{family}: the two paths have different customers"
        worst, where = 0.0, "-"
        for column in naive_frame.columns:
            mine, theirs = ours_frame[column], naive_frame[column]
            if not mine.isna().equals(theirs.isna()):
                worst, where = float("inf"), f"{column} (NULL in one path only)"
                break
            if pd.api.types.is_datetime64_any_dtype(mine):
                difference = (mine - theirs).abs().dt.total_seconds().max()
            else:
                scale = np.maximum(theirs.abs().astype(float), 1.0)
                difference = ((mine.astype(float) - theirs.astype(float)).abs() / scale).max()
            if pd.notna(difference) and difference > worst:
                worst, where = float(difference), column
        print(f"  {family:<12} {len(naive_frame.columns)} features compared, largest relative difference "
              f"{worst:.2e} ({where})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, help="an existing lake folder (default: generate and ingest one)")
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers to generate without --lake")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cutoff", type=date.fromisoformat, help="default: the latest monthly cutoff of the lake")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path; medians are printed")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("bench-out/features"))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (snapshots, generated lake)")
    parser.add_argument("--step", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step:  # a child process: one path, figures on stdout
        print("STEP " + json.dumps(run_child(args.step, args.data_dir, args.cutoff)), flush=True)
        return

    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    env = {**os.environ, "CUSTLENS_PII_SALT": "benchmark-salt", "CUSTLENS_DATA_DIR": str(work / "data")}
    try:
        if args.lake:
            # outputs go to the work folder; the given lake is only read
            (work / "data" / "lake").symlink_to(args.lake.resolve(), target_is_directory=True)
        else:
            prepare_lake(work, args.customers, args.seed, env)
        data_dir = work / "data"
        cutoff = args.cutoff or default_cutoff(data_dir)
        lake_bytes = sum(path.stat().st_size for path in (data_dir / "lake").glob("*.parquet"))
        print(f"custlens feature snapshot benchmark: lake {(data_dir / 'lake').resolve()} "
              f"({lake_bytes / 2**20:,.0f} MiB), cutoff {cutoff}, {os.cpu_count()} cores")  # fmt: skip
        child = ["--data-dir", str(data_dir), "--cutoff", cutoff.isoformat()]
        runs: dict[str, list[dict]] = {"ours": [], "naive": []}
        for _ in range(args.repeat):
            runs["ours"].append(run_step("ours: DuckDB, all 6 families", ["--step", "ours", *child], env))
            if not args.skip_naive:
                runs["naive"].append(run_step("naive: pandas, purchases+engagement", ["--step", "naive", *child], env))
        ours_seconds = statistics.median(run["seconds"] for run in runs["ours"])
        ours_peak = statistics.median(run["peak_mib"] for run in runs["ours"])
        print(f"\ncustomers in the snapshot: {runs['ours'][0]['customers']:,}")
        print(f"ours  (median of {args.repeat}): {ours_seconds:.1f} s, peak {ours_peak:,.0f} MiB "
              "(budget: 120 s, 8 GiB)")  # fmt: skip
        btyd_seconds = statistics.median(run["btyd_seconds"] for run in runs["ours"])
        print(f"  of which btyd (BG/NBD + Gamma-Gamma fitted on {runs['ours'][0]['btyd_fitted_on']:,} buyers, "
              f"every customer scored): {btyd_seconds:.1f} s"
              + (f"; not fitted: {runs['ours'][0]['btyd_unfitted']}" if runs["ours"][0]["btyd_unfitted"] else ""))
        if runs["naive"]:
            naive_seconds = statistics.median(run["seconds"] for run in runs["naive"])
            naive_peak = statistics.median(run["peak_mib"] for run in runs["naive"])
            print(f"naive (median of {args.repeat}): {naive_seconds:.1f} s, peak {naive_peak:,.0f} MiB "
                  "(2 of the 6 families)")  # fmt: skip
            print(f"ratio naive / ours: {naive_seconds / ours_seconds:.1f}x time, {naive_peak / ours_peak:.1f}x memory "
                  "(ours does all 6 families, naive only 2: the time ratio understates)")  # fmt: skip
            print("same values?")
            compare(data_dir, cutoff)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
