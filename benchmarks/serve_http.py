"""Online /score over HTTP on loopback against the budgets, and the naive path in the same run.

- ours: `custlens serve` (BentoML, SQLite online store, all four models) started here, driven by
  `wrk` from a second process with a Lua script that POSTs JSON with the API key: 1 id p50/p99
  (one connection), 100 ids p99 (one connection), single-id throughput over --seconds (60 by
  default) at --connections connections, and every error (socket errors and non-2xx answers).
  Peak RSS (VmHWM) of each worker process.
- naive: in this process, no HTTP (so a lower bound of what a server built on it would do): the
  Feast SDK's `get_online_features` of the same online rows (`customer_vector`), unpacked into
  the named features, then MLflow pyfunc `predict` of each of the four registered @champion
  models. p50/p99 of 1 and 100 ids and the single-caller rate.

Needs a trained project (`make demo`) and wrk (`apt-get install -y wrk`).

    .venv/bin/python benchmarks/serve_http.py                 # 60 s of throughput, 2 workers
    .venv/bin/python benchmarks/serve_http.py --seconds 10 --workers 2 --connections 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from custlens.settings import load_settings  # noqa: E402
from features.snapshot_reader import load_packed_snapshot  # noqa: E402

KEY = "bench-key"
BUDGETS = {"1 id p50": 3.0, "1 id p99": 10.0, "100 ids p99": 25.0, "single-id req/s": 500.0}

# wrk: each request takes the next body from the list; `done` prints the figures as one JSON line.
LUA = """
local bodies = {BODIES}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/score", {["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer KEY"}, bodies[(n % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"p50": %f, "p99": %f, "requests": %d, "seconds": %f, "errors": %d, "non2xx": %d}\\n',
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bodies(ids: list[str], size: int, count: int) -> list[str]:
    rng = random.Random(size)
    return [json.dumps({"customer_ids": rng.sample(ids, size)}) for _ in range(count)]


def run_wrk(url: str, bodies: list[str], seconds: float, connections: int, folder: Path) -> dict[str, Any]:
    script = folder / f"score-{len(bodies)}-{connections}.lua"
    lua_bodies = "{" + ",".join("[[" + body + "]]" for body in bodies) + "}"
    script.write_text(LUA.replace("{BODIES}", lua_bodies).replace("KEY", KEY))
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(line for line in out.stdout.splitlines() if line.startswith("WRK "))
    figures: dict[str, Any] = json.loads(line[4:])
    figures["rate"] = figures["requests"] / figures["seconds"]
    return figures


def start_server(port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CUSTLENS_API_KEYS": KEY, "CUSTLENS_SERVING__RELOAD_POLL_SECONDS": "0"}
    command = [str(Path(sys.executable).parent / "custlens"), "serve", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.terminate()
    raise SystemExit("the server did not become ready within 120 s; is the project trained (`make demo`)?")


def worker_peak_rss(server: subprocess.Popen[bytes]) -> list[float]:
    """Peak RSS (VmHWM, MiB) of each service worker (the processes running the service module)."""
    peaks = []
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            if "_bentoml_impl.worker.service" not in " ".join(child.cmdline()):
                continue
            status = Path(f"/proc/{child.pid}/status").read_text()
        except (psutil.Error, OSError):
            continue
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        peaks.append(kib / 1024)
    return peaks


def naive_path(settings: Any, ids: list[str], calls: int) -> dict[str, dict[str, float]]:
    """Feast SDK read + unpack + pyfunc predict of each model, timed per call in this process."""
    import mlflow

    from features.catalog import PACKED_LABELS, PACKED_NUMBERS
    from features.recency import days_between_epochs
    from features.store import feature_store
    from training.tracking import connect, registered_name

    connect(settings)
    store = feature_store(settings)
    models = {
        m: mlflow.pyfunc.load_model(f"models:/{registered_name(m)}@champion") for m in ("churn", "repurchase", "clv")
    }
    segments = mlflow.pyfunc.load_model(f"models:/{registered_name('segments')}@champion")
    from serving.scorer import Scorer

    scorer = Scorer.from_registry(settings)  # only for the names of each model's inputs
    from features.catalog import RECENCY_FEATURES

    def one_call(batch: list[str]) -> None:
        now = datetime.now(UTC)
        answer = store.get_online_features(
            features=["customer_vector:numbers", "customer_vector:labels"],
            entity_rows=[{"customer_id": i} for i in batch],
        ).to_dict()
        import pandas as pd

        numbers = np.array([row if row is not None else [np.nan] * len(PACKED_NUMBERS) for row in answer["numbers"]],
                           dtype=float)  # fmt: skip
        columns: dict[str, Any] = {name: numbers[:, j] for j, name in enumerate(PACKED_NUMBERS)}
        for j, name in enumerate(PACKED_LABELS):
            columns[name] = [(row[j] or None) if row else None for row in answer["labels"]]
        for name, stamp in RECENCY_FEATURES.items():
            columns[name] = days_between_epochs(now.timestamp(), columns[stamp])
        frame = pd.DataFrame(columns)
        for model, pyfunc in models.items():
            bundle = getattr(scorer, model)
            pyfunc.predict(frame[bundle.features])
        segments.predict(frame[scorer.segments.inputs].astype("float64"))

    out = {}
    rng = random.Random(0)
    for size in (1, 100):
        for _ in range(3):
            one_call(rng.sample(ids, size))
        took = []
        for _ in range(calls if size == 1 else max(20, calls // 5)):
            batch = rng.sample(ids, size)
            started = time.perf_counter()
            one_call(batch)
            took.append((time.perf_counter() - started) * 1000)
        out[f"{size}"] = {"p50": float(np.percentile(took, 50)), "p99": float(np.percentile(took, 99)),
                          "rate": 1000 / float(np.mean(took))}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="Length of the single-id throughput run.")
    parser.add_argument("--latency-seconds", type=float, default=10, help="Length of each latency run.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8, help="Connections of the throughput run.")
    parser.add_argument("--naive-calls", type=int, default=200, help="Naive-path calls timed for 1 id.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu) or brew install wrk")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = load_settings()
    ids = load_packed_snapshot(settings).customer_ids
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"starting custlens serve on {url} with {args.workers} workers ...", flush=True)
    server = start_server(port, args.workers)
    ours: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            one, hundred = _bodies(ids, 1, 1000), _bodies(ids, 100, 100)
            run_wrk(url, one, 3, args.connections, Path(folder))  # warm-up
            ours["1 id"] = run_wrk(url, one, args.latency_seconds, 1, Path(folder))
            ours["100 ids"] = run_wrk(url, hundred, args.latency_seconds, 1, Path(folder))
            ours["throughput"] = run_wrk(url, one, args.seconds, args.connections, Path(folder))
        peaks = worker_peak_rss(server)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("timing the naive path (Feast SDK + MLflow pyfunc, in-process) ...", flush=True)
    naive = naive_path(settings, ids, args.naive_calls)

    errors = sum(run["errors"] + run["non2xx"] for run in ours.values())
    rows = [
        ("1 id p50 (ms)", ours["1 id"]["p50"], naive["1"]["p50"], BUDGETS["1 id p50"]),
        ("1 id p99 (ms)", ours["1 id"]["p99"], naive["1"]["p99"], BUDGETS["1 id p99"]),
        ("100 ids p99 (ms)", ours["100 ids"]["p99"], naive["100"]["p99"], BUDGETS["100 ids p99"]),
        ("single-id req/s", ours["throughput"]["rate"], naive["1"]["rate"], BUDGETS["single-id req/s"]),
    ]
    print(f"\n{'':22}{'ours (HTTP)':>14}{'naive (no HTTP)':>18}{'ratio':>9}{'budget':>9}")
    for name, mine, theirs, budget in rows:
        ratio = mine / theirs if "req/s" in name else theirs / mine
        ok = mine >= budget if "req/s" in name else mine <= budget
        print(f"{name:22}{mine:14.2f}{theirs:18.2f}{ratio:8.1f}x{budget:9.0f} {'ok' if ok else 'OVER'}")
    print(f"100 ids p50 (ms): ours {ours['100 ids']['p50']:.2f}, naive {naive['100']['p50']:.2f}")
    print(f"throughput run: {args.seconds:.0f} s, {args.connections} connections, "
          f"{ours['throughput']['requests']:,} requests, p50 {ours['throughput']['p50']:.2f} ms, "
          f"p99 {ours['throughput']['p99']:.2f} ms")  # fmt: skip
    print(f"errors (socket errors + non-2xx, all runs): {errors}")
    print("peak RSS per worker (MiB): " + ", ".join(f"{peak:.0f}" for peak in peaks))


if __name__ == "__main__":
    main()
