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

- soak (`--soak`): one worker under the load that made a stalled service: single-id /score from wrk
  at --connections connections (as fast as the service answers) plus 10 clients asking 1,000 ids
  each in a loop (waiting Retry-After on a 503), while a third process asks /healthz every 50 ms,
  all for --seconds. Prints /healthz p50/p99/max, the answers of each kind of /score request by
  status (200, 503, other 5xx, time-outs), their rate and latency, and the verdict against the
  targets: /healthz p99 under 50 ms, every /score answer a 200 or a 503, no time-out, no 5xx.

With --compare-with REF the code of an earlier commit (a scratch worktree) is served too, over the
same data and models: its server and ours side by side, measured in --rounds alternating rounds
(medians), or its soak after ours.

Needs a trained project (`make demo`) and wrk (`apt-get install -y wrk`).

    .venv/bin/python benchmarks/serve_http.py                 # 60 s of throughput, 2 workers
    .venv/bin/python benchmarks/serve_http.py --seconds 10 --workers 2 --connections 8
    .venv/bin/python benchmarks/serve_http.py --soak          # 60 s, 1 worker, 8 + 10 clients
    .venv/bin/python benchmarks/serve_http.py --no-naive --compare-with fdba4d1 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
SOAK_HEAVY_CLIENTS = 10
SOAK_HEAVY_IDS = 1000
SOAK_HEALTH_EVERY = 0.05  # seconds between two /healthz probes
SOAK_TIMEOUT = 10.0  # seconds a soak client waits for an answer before it counts a time-out
SOAK_HEALTH_P99_MS = 50.0

# wrk: each request takes the next body from the list; `done` prints the figures as one JSON line.
LUA_REQUESTS = """
local bodies = {BODIES}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/score", {["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer KEY"}, bodies[(n % #bodies) + 1])
end
"""
LUA = LUA_REQUESTS + """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"p50": %f, "p99": %f, "requests": %d, "seconds": %f, "errors": %d, "non2xx": %d}\\n',
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""
# The soak's: the same requests, each answer counted by status in its thread, summed in `done`.
SOAK_LUA = LUA_REQUESTS + """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) ok = 0; busy = 0; failed = 0; other = 0 end
response = function(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 503 then busy = busy + 1
  elseif status >= 500 then failed = failed + 1 else other = other + 1 end
end
done = function(summary, latency, requests)
  local o, b, f, x = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); b = b + t:get("busy"); f = f + t:get("failed"); x = x + t:get("other")
  end
  local e = summary.errors
  io.write(string.format('WRK {"p50": %f, "p99": %f, "requests": %d, "seconds": %f, "errors": %d, "timeouts": %d, '
    .. '"non2xx": %d, "200": %d, "503": %d, "5xx": %d, "other": %d}\\n',
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write, e.timeout, e.status, o, b, f, x))
end
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bodies(ids: list[str], size: int, count: int) -> list[str]:
    rng = random.Random(size)
    return [json.dumps({"customer_ids": rng.sample(ids, size)}) for _ in range(count)]


def run_wrk(
    url: str, bodies: list[str], seconds: float, connections: int, folder: Path, lua: str = LUA, timeout: float = 2.0
) -> dict[str, Any]:
    script = folder / f"score-{len(bodies)}-{connections}.lua"
    lua_bodies = "{" + ",".join("[[" + body + "]]" for body in bodies) + "}"
    script.write_text(lua.replace("{BODIES}", lua_bodies).replace("KEY", KEY))
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", f"--timeout={timeout:g}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(line for line in out.stdout.splitlines() if line.startswith("WRK "))
    figures: dict[str, Any] = json.loads(line[4:])
    figures["rate"] = figures["requests"] / figures["seconds"]
    return figures


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def probe_health(url: str, seconds: float, results: Any) -> None:
    """Ask /healthz every SOAK_HEALTH_EVERY s for `seconds` (its own process: the clients' threads
    must not delay it); put [(status or "timeout"/"error", milliseconds), ...] on `results`."""
    answers: list[tuple[int | str, float]] = []
    until = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=SOAK_TIMEOUT) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                status: int | str = http.get("/healthz").status_code
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.TransportError:
                status = "error"
            answers.append((status, (time.perf_counter() - started) * 1000))
            time.sleep(max(0.0, SOAK_HEALTH_EVERY - (time.perf_counter() - started)))
    results.put(answers)


def heavy_client(url: str, bodies: list[str], until: float, answers: list[tuple[int | str, float]]) -> None:
    """POST 1,000 ids at a time until `until`, waiting Retry-After after a 503 as a CRM client should."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    rng = random.Random(threading.get_ident())
    with httpx.Client(base_url=url, timeout=SOAK_TIMEOUT, headers=headers) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            retry_after = 0.0
            try:
                answer = http.post("/score", content=rng.choice(bodies))
                status: int | str = answer.status_code
                if status == 503:
                    retry_after = float(answer.headers.get("Retry-After", 1))
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.TransportError:
                status = "error"
            answers.append((status, (time.perf_counter() - started) * 1000))
            time.sleep(min(retry_after, max(0.0, until - time.monotonic())))


def _kind(status: int | str) -> str:
    """200, 503, 5xx (any other), timeout (or a broken connection) or other (a 4xx)."""
    if status in (200, 503):
        return str(status)
    if isinstance(status, str):
        return "timeout"
    return "5xx" if status >= 500 else "other"


def soak(url: str, ids: list[str], seconds: float, connections: int, folder: Path) -> bool:
    """The soak scenario (see the module's docstring); prints its figures, True when within the targets."""
    heavy_bodies = _bodies(ids, SOAK_HEAVY_IDS, 20)
    context = multiprocessing.get_context("fork")  # before any client thread exists
    health_results = context.Queue()
    prober = context.Process(target=probe_health, args=(url, seconds, health_results))
    prober.start()
    until = time.monotonic() + seconds
    heavy: list[tuple[int | str, float]] = []
    clients = [threading.Thread(target=heavy_client, args=(url, heavy_bodies, until, heavy))
               for _ in range(SOAK_HEAVY_CLIENTS)]  # fmt: skip
    for client in clients:
        client.start()
    single = run_wrk(url, _bodies(ids, 1, 1000), seconds, connections, folder, lua=SOAK_LUA, timeout=SOAK_TIMEOUT)
    for client in clients:
        client.join()
    health = health_results.get(timeout=SOAK_TIMEOUT + 30)
    prober.join()

    health_ms = [ms for status, ms in health if status == 200]
    health_failed = len(health) - len(health_ms)
    kinds = Counter(_kind(status) for status, _ in heavy)
    heavy_ok = [ms for status, ms in heavy if status == 200]
    heavy_busy = [ms for status, ms in heavy if status == 503]
    print(f"\nsoak: {seconds:.0f} s, 1 worker; single-id /score from wrk at {connections} connections, "
          f"{SOAK_HEAVY_CLIENTS} clients asking {SOAK_HEAVY_IDS:,} ids each, "
          f"/healthz every {SOAK_HEALTH_EVERY * 1000:.0f} ms")  # fmt: skip
    print(f"/healthz: {len(health):,} probes, p50 {_percentile(health_ms, 50):.1f} ms, "
          f"p99 {_percentile(health_ms, 99):.1f} ms, max {max(health_ms, default=float('nan')):.1f} ms, "
          f"{health_failed} not answered 200")  # fmt: skip
    print(f"single-id /score: {single['requests']:,} answers, {single['rate']:,.0f}/s, p50 {single['p50']:.2f} ms, "
          f"p99 {single['p99']:.2f} ms; 200: {single['200']:,}, 503: {single['503']:,}, other 5xx: {single['5xx']}, "
          f"other: {single['other']}, time-outs: {single['timeouts']}, socket errors: {single['errors']}")  # fmt: skip
    print(f"{SOAK_HEAVY_IDS:,}-id /score: {len(heavy):,} answers, {kinds['200'] / seconds:.1f}/s "
          f"({kinds['200'] * SOAK_HEAVY_IDS / seconds:,.0f} customers/s); 200: {kinds['200']:,} "
          f"(p50 {_percentile(heavy_ok, 50):.0f} ms, p99 {_percentile(heavy_ok, 99):.0f} ms), "
          f"503: {kinds['503']:,} (p99 {_percentile(heavy_busy, 99):.1f} ms), other 5xx: {kinds['5xx']}, "
          f"other: {kinds['other']}, time-outs: {kinds['timeout']}")  # fmt: skip
    health_p99 = _percentile(health_ms, 99)
    checks = {
        f"/healthz p99 under {SOAK_HEALTH_P99_MS:.0f} ms": health_p99 < SOAK_HEALTH_P99_MS and not health_failed,
        "every /score answer a 200 or a 503": single["other"] + single["5xx"] + kinds["other"] + kinds["5xx"] == 0,
        "no time-out": single["timeouts"] + single["errors"] + kinds["timeout"] == 0,
        "no 5xx (503 aside)": single["5xx"] + kinds["5xx"] == 0,
    }
    for check, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    return all(checks.values())


def start_server(port: int, workers: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **(env or {}), "CUSTLENS_API_KEYS": KEY, "CUSTLENS_SERVING__RELOAD_POLL_SECONDS": "0"}
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


@contextmanager
def serving(workers: int, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`custlens serve` (of the code on PYTHONPATH in `env`, else ours) on a free port, once ready."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, workers, env)
    try:
        yield server, url
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def code_at(ref: str, settings: Any) -> Iterator[dict[str, str]]:
    """The code of commit `ref` in a scratch worktree, as the environment that serves it over our
    data and models."""
    from training.tracking import tracking_uri

    with tempfile.TemporaryDirectory() as scratch:
        checkout = Path(scratch) / "code"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), ref], check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield {"PYTHONPATH": str(checkout), "CUSTLENS_DATA_DIR": str(settings.data_dir.resolve()),
                   "CUSTLENS_TRAINING__TRACKING_URI": tracking_uri(settings)}  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                           capture_output=True)  # fmt: skip


def measure(url: str, ids: list[str], args: argparse.Namespace, folder: Path) -> dict[str, dict[str, Any]]:
    """The three runs: 1 id and 100 ids on one connection, single-id throughput at --connections."""
    one, hundred = _bodies(ids, 1, 1000), _bodies(ids, 100, 100)
    return {
        "1 id": run_wrk(url, one, args.latency_seconds, 1, folder),
        "100 ids": run_wrk(url, hundred, args.latency_seconds, 1, folder),
        "throughput": run_wrk(url, one, args.seconds, args.connections, folder),
    }


def medians(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each figure's median over the rounds (one round: its figures)."""
    return {run: {figure: float(np.median([r[run][figure] for r in rounds])) for figure in rounds[0][run]}
            for run in rounds[0]}  # fmt: skip


def summary(figures: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    one, hundred, throughput = figures["1 id"], figures["100 ids"], figures["throughput"]
    return (f"1 id p50 {one['p50']:.2f} ms, p99 {one['p99']:.2f} ms; 100 ids p50 {hundred['p50']:.2f} ms, "
            f"p99 {hundred['p99']:.2f} ms; single-id {throughput['rate']:,.0f} req/s for {args.seconds:.0f} s at "
            f"{args.connections} connections (p50 {throughput['p50']:.2f} ms, p99 {throughput['p99']:.2f} ms); "
            f"errors {sum(run['errors'] + run['non2xx'] for run in figures.values()):.0f}")  # fmt: skip


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
    parser.add_argument("--workers", type=int, default=None, help="Service workers (default: 2; the soak: 1).")
    parser.add_argument("--connections", type=int, default=8, help="Connections of the throughput (or soak) run.")
    parser.add_argument("--naive-calls", type=int, default=200, help="Naive-path calls timed for 1 id.")
    parser.add_argument("--no-naive", action="store_true", help="Skip the naive path (ours only).")
    parser.add_argument("--soak", action="store_true", help="Run the soak scenario instead (see above).")
    parser.add_argument("--compare-with", metavar="REF", help="Also serve the code of this git commit, measured alike.")
    parser.add_argument("--rounds", type=int, default=3, help="With --compare-with: alternating rounds (medians).")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu) or brew install wrk")

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = load_settings()
    ids = load_packed_snapshot(settings).customer_ids
    workers = args.workers or (1 if args.soak else 2)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        codes: dict[str, dict[str, str] | None] = {"ours": None}
        if args.compare_with:
            codes[args.compare_with] = stack.enter_context(code_at(args.compare_with, settings))
        if args.soak:
            within = {}
            for name, env in codes.items():
                print(f"\n== {name}: custlens serve with {workers} worker(s) ...", flush=True)
                with serving(workers, env) as (_, url):
                    run_wrk(url, _bodies(ids, 1, 1000), 3, args.connections, folder)  # warm-up
                    within[name] = soak(url, ids, args.seconds, args.connections, folder)
            sys.exit(0 if within["ours"] else 1)
        print(f"starting {' and '.join(codes)}: custlens serve with {workers} workers ...", flush=True)
        servers = {name: stack.enter_context(serving(workers, env)) for name, env in codes.items()}
        for _, url in servers.values():
            run_wrk(url, _bodies(ids, 1, 1000), 3, args.connections, folder)  # warm-up
        rounds: dict[str, list[dict[str, dict[str, Any]]]] = {name: [] for name in servers}
        for round_ in range(args.rounds if args.compare_with else 1):
            # alternately first and second, so that neither is always measured on a warmer machine
            for name in list(servers)[:: 1 if round_ % 2 == 0 else -1]:
                rounds[name].append(measure(servers[name][1], ids, args, folder))
        peaks = worker_peak_rss(servers["ours"][0])
    ours = medians(rounds["ours"])
    if args.compare_with:
        print(f"\nmedians of {args.rounds} alternating rounds:")
        for name in rounds:
            print(f"  {name:>10}: {summary(medians(rounds[name]), args)}")
    if args.no_naive:
        if not args.compare_with:
            print(summary(ours, args))
        return
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
          f"{ours['throughput']['requests']:,.0f} requests, p50 {ours['throughput']['p50']:.2f} ms, "
          f"p99 {ours['throughput']['p99']:.2f} ms")  # fmt: skip
    print(f"errors (socket errors + non-2xx, all runs): {errors}")
    print("peak RSS per worker (MiB): " + ", ".join(f"{peak:.0f}" for peak in peaks))


if __name__ == "__main__":
    main()
