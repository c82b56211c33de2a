"""The end of `make demo`: start the service, score a few customers over HTTP as a CRM would (by
its own ids, one of them unknown), show the answer, stop the service and print how to start it.

    python -m serving.demo [--port 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from custlens.settings import PROJECT_ROOT, Settings, load_settings
from features.lake.tables import crosswalk_path

DEMO_KEY = "demo-key"
READY_SECONDS = 120


def crm_ids(settings: Settings, count: int) -> list[str]:
    """A few of the CRM's own ids from the crosswalk."""
    table = pq.read_table(crosswalk_path(settings), columns=["source", "source_customer_id"])
    crm = table.filter(pc.equal(table.column("source"), load_settings().crm_source))
    return crm.column("source_customer_id").to_pylist()[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    console = Console()
    settings = load_settings()
    key = next(iter(sorted(settings.api_key_set())), DEMO_KEY)
    env = {**os.environ, "CUSTLENS_API_KEYS": os.environ.get("CUSTLENS_API_KEYS", DEMO_KEY)}
    custlens = str(Path(sys.executable).parent / "custlens")
    command = [custlens, "serve", "--port", str(args.port)]
    base = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with console.status(f"starting the service on {base} (waiting for /readyz)"):
            _wait_ready(base, server)
        body = {
            "customers": [{"source": settings.crm_source, "source_customer_id": i}
                          for i in [*crm_ids(settings, 3), "not-a-customer"]],
            "reasons": True,
        }  # fmt: skip
        headers = {"Authorization": f"Bearer {key}"}
        answer = httpx.post(f"{base}/score", json=body, headers=headers, timeout=10).json()
        console.print(f"[bold]POST {base}/score[/] (by the CRM's own ids) -> model versions {answer['model_versions']}")
        console.print(_table(answer["results"], answer["windows"]))
        first = next((r for r in answer["results"] if r["known"]), None)
        if first is not None:
            console.print("the first answer in full:")
            console.print_json(json.dumps(first))
        unauthorized = httpx.post(f"{base}/score", json=body, timeout=10)
        console.print(f"without a key: {unauthorized.status_code} {unauthorized.json()['error']}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    console.print(
        f"\nThe service is stopped. Start it with:\n  CUSTLENS_API_KEYS={DEMO_KEY} .venv/bin/custlens serve\n"
        f"and call it with:\n  curl -s -X POST {base}/score -H 'Authorization: Bearer {DEMO_KEY}' "
        "-H 'Content-Type: application/json' -d '{\"customer_ids\": [\"...\"], \"reasons\": true}'",
        highlight=False,
    )


def _wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    reason = "no answer yet"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            errors = server.stderr.read().decode(errors="replace")[-2000:] if server.stderr else ""
            raise SystemExit(f"the service exited with {server.returncode}:\n{errors}")
        try:
            ready = httpx.get(f"{base}/readyz", timeout=2)
            if ready.status_code == 200:
                return
            reason = ready.json().get("reason", reason)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service was not ready after {READY_SECONDS} s: {reason}")


def _table(results: list[dict[str, object]], windows: dict[str, int | None]) -> Table:
    """The answers, each windowed score headed by the days it is over (the answer's `windows`)."""
    table = Table(title_justify="left")
    buys, value = f"buys in {windows['repurchase_days']} d", f"value in {windows['clv_days']} d"
    for column in ("CRM id", f"churn ({windows['churn_days']} d)", "risk", buys, "next order", value, "RFM",
                   "top reason"):  # fmt: skip
        table.add_column(column)
    for result in results:
        if not result["known"]:
            table.add_row(str(result["source_customer_id"]), "[dim]unknown customer: no scores[/]")
            continue
        reasons = result.get("churn_reasons") or []
        churn = result["churn_probability"]
        table.add_row(
            str(result["source_customer_id"]),
            _shown(churn, "{:.0%}") if churn is not None else f"[dim]{result.get('churn_not_scored_reason') or '-'}[/]",
            str(result["churn_risk"] or "-"),
            _shown(result["repurchase_probability"], "{:.0%}"),
            str(result["expected_next_order_date"] or "-"),
            _shown(result["predicted_clv"], "{:,.0f}"),
            str(result["rfm_segment"]),
            str(reasons[0]["text"]) if reasons else "",  # type: ignore[index]
        )
    return table


def _shown(value: object, spelled: str) -> str:
    """A score as the table shows it; "-" where the answer has none (null)."""
    return "-" if value is None else spelled.format(value)


if __name__ == "__main__":
    main()
