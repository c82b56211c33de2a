"""What the service does with an HTTP request around its endpoint, in plain ASGI: Prometheus
metrics by route (never by the raw path), a bound on the requests one worker holds (503 with
Retry-After beyond it), and the request body read whole, under a size limit and a deadline
(413 / 408), before an endpoint sees it. serving/service.py puts these in front of BentoML.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection
from typing import Any

import anyio
import anyio.to_thread
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("custlens.serving")

OTHER_ROUTE = "other"  # the label of every path that is not one of the service's routes
RETRY_AFTER_SECONDS = 1  # what a 503 for a full worker tells the client to wait

# prometheus_client follows BentoML's PROMETHEUS_MULTIPROC_DIR: /metrics sums every worker.
http_requests = Counter(
    name="custlens_http_requests",
    documentation="HTTP requests answered, by route (`other`: any path that is not one) and status.",
    labelnames=["route", "status"],
)
http_seconds = Histogram(
    name="custlens_http_request_duration_seconds",
    documentation="Time from a request's arrival to its answer, by route.",
    labelnames=["route"],
)
http_in_flight = Gauge(
    name="custlens_http_requests_in_flight",
    documentation="Requests being answered now, by route.",
    labelnames=["route"],
    multiprocess_mode="livesum",
)


class HttpMetrics:
    """Counts and times every HTTP request under its route: one of `routes`, or OTHER_ROUTE for
    any other path, so that no caller can add a series (each unknown path used to be a new one)."""

    def __init__(self, app: ASGIApp, routes: Collection[str]) -> None:
        self.app = app
        self.routes = frozenset(routes)
        labels = [*self.routes, OTHER_ROUTE]
        self._in_flight = {route: http_in_flight.labels(route) for route in labels}
        self._seconds = {route: http_seconds.labels(route) for route in labels}
        self._answered: dict[tuple[str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else OTHER_ROUTE
        started = time.perf_counter()
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = self._in_flight[route]
        in_flight.inc()
        try:
            await self.app(scope, receive, send_noting_status)
        except anyio.get_cancelled_exc_class():
            # BentoML's TimeoutMiddleware, around this one, cancels a request that has not started
            # its answer within `traffic.timeout` and answers 504 itself.
            status = status or 504
            raise
        except BaseException:
            status = status or 500  # Starlette's ServerErrorMiddleware answers it
            raise
        finally:
            in_flight.dec()
            # A request whose client left before any answer was sent has none to count.
            if status:
                self._count(route, status, time.perf_counter() - started)

    def _count(self, route: str, status: int, seconds: float) -> None:
        answered = self._answered.get((route, status))
        if answered is None:  # at most routes x the statuses the service answers
            answered = self._answered[route, status] = http_requests.labels(route, str(status))
        answered.inc()
        self._seconds[route].observe(seconds)


async def metrics_endpoint(_: Request) -> Response:
    """GET /metrics: every worker's series (or this process's, when not under `bentoml serve`)."""
    return Response(await anyio.to_thread.run_sync(_exposition), media_type=CONTENT_TYPE_LATEST)


def _exposition() -> bytes:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


# ---------------------------------------------------------------------------------------------
# Refusals: answered here, before BentoML reads or parses anything


class Refused(Exception):
    """A request answered with `status` and {"error": message} instead of reaching its endpoint."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}

    def response(self) -> Response:
        return JSONResponse({"error": str(self)}, status_code=self.status, headers=self.headers)


class ClientLeft(Exception):
    """The client closed its connection before its request was whole: there is no one to answer."""


def busy(in_flight: int) -> Refused:
    return Refused(
        503,
        f"this worker is answering {in_flight} requests, its most; retry in {RETRY_AFTER_SECONDS} s",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, None without one (a chunked body)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # uvicorn refuses a malformed length before the app sees it
    return None


async def read_body(scope: Scope, receive: Receive, max_bytes: int, timeout: float) -> bytes:
    """The whole request body, or Refused: 413 when it is (or declares itself) larger than
    `max_bytes`, found before it is read whole; 408 when it is not whole within `timeout` seconds.
    ClientLeft when the client disconnects first."""
    closing = {"Connection": "close"}  # part of the body may still be on its way
    length = declared_length(scope)
    if length is not None and length > max_bytes:
        raise Refused(413, f"the request body is {length:,} bytes; at most {max_bytes:,} are accepted", closing)
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientLeft
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise Refused(413, f"the request body is over {max_bytes:,} bytes, the most accepted", closing)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise Refused(408, f"the request body was not whole within {timeout:g} s", closing) from None


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands out `body` whole, then whatever the connection says next (its
    disconnect)."""
    pending = True

    async def receive_read_body() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_read_body


def request_line(scope: Scope) -> str:
    """`POST /score`, for a log line."""
    return f"{scope.get('method', '?')} {scope['path']}"


__all__ = [
    "OTHER_ROUTE",
    "RETRY_AFTER_SECONDS",
    "ClientLeft",
    "HttpMetrics",
    "Refused",
    "busy",
    "metrics_endpoint",
    "read_body",
    "replay",
    "request_line",
]
