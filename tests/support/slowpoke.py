"""A BentoML service with a 0.2 s request timeout and an endpoint that never answers, served
in-process through the patched TimeoutMiddleware; prints what a client got as JSON.

Run as its own process (`python -m tests.support.slowpoke`): BentoML registers its Prometheus
metrics once per process, so a second BentoML app in a test process that already serves custlens
(tests/service) fails with "Duplicated timeseries in CollectorRegistry"."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bentoml
from starlette.testclient import TestClient

from serving.bentoml_compat import cancel_request_timers

TIMEOUT = 0.2
GENEROUS = 30.0  # far beyond TIMEOUT: only a broken middleware makes the client wait this long


@bentoml.service(name="slowpoke", traffic={"timeout": TIMEOUT}, logging={"access": {"enabled": False}})
class Slowpoke:
    """One endpoint that never answers and one that answers at once."""

    @bentoml.api
    async def never(self) -> str:
        await asyncio.Event().wait()
        return "unreachable"

    @bentoml.api
    async def at_once(self) -> str:
        return "ok"


def main() -> None:
    patched = cancel_request_timers()
    service: Any = Slowpoke
    with TestClient(service.to_asgi()) as client:
        at_once = client.post("/at_once", json={}).text
        # asked from a thread, so that a middleware that never answers ends this run instead of hanging it
        pool = ThreadPoolExecutor(max_workers=1)
        started = time.monotonic()
        response = pool.submit(client.post, "/never", json={}).result(timeout=GENEROUS)
        waited = time.monotonic() - started
        pool.shutdown(wait=False)
    print(json.dumps({"patched": patched, "at_once": at_once, "status": response.status_code,
                      "body": response.json(), "waited": waited, "timeout": TIMEOUT}))  # fmt: skip


if __name__ == "__main__":
    main()
