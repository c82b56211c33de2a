"""Every use of the private internals of BentoML and of the uvicorn server it runs, fenced: each
fix below is applied only when the installed version is exactly the one it was written against,
and otherwise left out with a warning.

- **The request timer** (BentoML 1.4.39). `TimeoutMiddleware` (bentoml._internal.server.http.traffic)
  arms `loop.call_later(timeout, ...)` for every request and never cancels it: each request leaves a
  timer, a future and a context alive for the timeout (60 s by default), 100,000+ objects at 2,000
  requests/s, which drag full GC passes into the tail latency. `cancel_request_timers` replaces the
  middleware's `__call__` with one that keeps the behaviour (a 504 with BentoML's JSON error when no
  response has started within the timeout) on `asyncio.timeout`, whose timer is cancelled when the
  request ends.
- **Client errors logged as server errors** (BentoML 1.4.39). BentoML logs every request it refuses
  itself (a body that is not JSON, or does not match the input schema) with `log_exception`: an
  ERROR and a traceback per bad request. `log_client_errors_at_info` turns those records into one
  INFO line naming the status and what was wrong; a 5xx keeps its ERROR and traceback.
- **The header read time-out** (uvicorn 0.54.0). uvicorn arms no timer until a connection's first
  response is complete: a client that connects and sends nothing, or a header a byte at a time,
  holds its connection (and a file descriptor) for as long as it likes. BentoML builds uvicorn's
  `Config` itself, so the protocol class cannot be passed in; `time_out_slow_headers` makes
  uvicorn's "auto" HTTP protocol a subclass that answers 408 and closes a connection whose request
  header is not whole in time.

tests/unit/test_bentoml_compat.py shows each defect on the stock code, the fix, and that another
version is left alone.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

logger = logging.getLogger("custlens.serving")

# The releases the fixes below were written against and tested on; keep them equal to the pins
# in requirements.lock (BentoML is pinned in pyproject.toml too; uvicorn comes with it).
PINNED_BENTOML = "1.4.39"
PINNED_UVICORN = "0.54.0"

# Set on TimeoutMiddleware when patched: BentoML's own __call__, kept for tests and for a look.
_STOCK_CALL = "_custlens_stock_call"
# The logger BentoML's `log_exception` (bentoml._internal.server.http_app) writes to.
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"
# Marks uvicorn's "auto" protocol as the header-time-out one.
_HEADER_TIMEOUT = "_custlens_header_timeout"


def installed_bentoml() -> str:
    return importlib.metadata.version("bentoml")


def installed_uvicorn() -> str:
    return importlib.metadata.version("uvicorn")


def _pinned(package: str, installed: str, pinned: str, fix: str, check: str) -> bool:
    if installed == pinned:
        return True
    logger.warning(
        "%s %s is installed, the %s is written for %s: not applied (check %s, then update the pin in "
        "serving/bentoml_compat.py)",
        package, installed, fix, pinned, check,
    )  # fmt: skip
    return False


# ---------------------------------------------------------------------------------------------
# BentoML's request timer


def cancel_request_timers() -> bool:
    """Make BentoML's request timeout cancel its timer when the request ends (idempotent).

    True when the replacement is in place; False, with a warning, when the installed BentoML is
    not PINNED_BENTOML and BentoML was left as it is.
    """
    if not _pinned("bentoml", installed_bentoml(), PINNED_BENTOML, "request-timer fix",
                   "whether TimeoutMiddleware still leaves a timer per request"):  # fmt: skip
        return False
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    if not hasattr(TimeoutMiddleware, _STOCK_CALL):
        setattr(TimeoutMiddleware, _STOCK_CALL, TimeoutMiddleware.__call__)
        TimeoutMiddleware.__call__ = timeout_call  # type: ignore[method-assign]
    return True


async def timeout_call(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """TimeoutMiddleware.__call__ with a cancelled timer: `self` has BentoML's `app` and `timeout`."""
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    started = False
    try:
        async with asyncio.timeout(self.timeout) as deadline:

            async def send_and_disarm(message: Message) -> None:
                nonlocal started
                if not started:
                    started = True
                    deadline.reschedule(None)  # like BentoML: the limit is on the first byte
                await send(message)

            await self.app(scope, receive, send_and_disarm)
    except TimeoutError:
        if started:
            raise
        response = JSONResponse(
            {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
        )
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------------
# BentoML's log of refused requests


def client_error_status(error: BaseException | None) -> int | None:
    """The 4xx BentoML answers for this exception of its request handler, None for any other:
    pydantic's ValidationError (bad JSON, wrong input) is a 400, a BentoMLException its own code."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, BentoMLException) and 400 <= error.error_code.value < 500:
        return int(error.error_code.value)
    return None


def _summary(error: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        first = error.errors(include_url=False, include_context=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        return f"{where + ': ' if where else ''}{first['msg']}{more}"
    return str(error)


class ClientErrorsAtInfo(logging.Filter):
    """Rewrites BentoML's "Exception on PATH [METHOD]" ERROR record of a client error into one
    INFO line: `POST /score answered 400: customer_ids: Input should be a valid array`."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = client_error_status(error)
        if status is None or error is None:
            return True
        path, method = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.msg, record.args = "%s %s answered %d: %s", (method, path, status, _summary(error))
        record.exc_info, record.exc_text = None, None
        return True


def log_client_errors_at_info() -> bool:
    """Install ClientErrorsAtInfo on BentoML's request logger (idempotent); False, with a warning,
    on another BentoML version."""
    if not _pinned("bentoml", installed_bentoml(), PINNED_BENTOML, "client-error log fix",
                   "whether BentoML still logs refused requests through log_exception"):  # fmt: skip
        return False
    request_logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, ClientErrorsAtInfo) for f in request_logger.filters):
        request_logger.addFilter(ClientErrorsAtInfo())
    return True


# ---------------------------------------------------------------------------------------------
# uvicorn's header read time-out


def _request_timeout_response(message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
    )
    return head + body


def _header_timeout_protocol() -> type[Any]:
    """uvicorn's httptools protocol with a header deadline (`header_timeout`, set by
    time_out_slow_headers), built when installed: uvicorn is imported only where it serves."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        """A request header must be whole within `header_timeout` seconds of the connection's
        opening, or of the request's first byte on a kept-alive connection; else 408 and close."""

        _custlens_header_timeout = True
        header_timeout: float  # seconds
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()  # a kept-alive connection's next request

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()  # the body has its own deadline (serving/traffic.py)
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            who = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            logger.info("closed the connection of %s: no whole request header in %g s", who, self.header_timeout)
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False  # an answer is on its way: close after it, not in it
                return
            message = f"no whole request header within {self.header_timeout:g} s"
            self.transport.write(_request_timeout_response(message))
            self.transport.close()

    return HeaderTimeoutProtocol


def time_out_slow_headers(seconds: float) -> bool:
    """Make uvicorn's "auto" HTTP protocol (the one BentoML's workers use) time out a request
    header after `seconds` (idempotent; the last call's time-out wins). False, with a warning, on
    another uvicorn version or when uvicorn would not use httptools."""
    if not _pinned("uvicorn", installed_uvicorn(), PINNED_UVICORN, "header time-out",
                   "whether uvicorn still arms no timer before a connection's first request"):  # fmt: skip
        return False
    import uvicorn.config
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    protocols: dict[str, Any] = uvicorn.config.HTTP_PROTOCOLS  # names or, as here, classes
    protocol = protocols["auto"]
    if not getattr(protocol, _HEADER_TIMEOUT, False):
        if AutoHTTPProtocol is not HttpToolsProtocol:
            logger.warning("uvicorn serves HTTP with h11 here, not httptools: no header time-out (install httptools)")
            return False
        protocol = protocols["auto"] = _header_timeout_protocol()
    protocol.header_timeout = seconds
    return True
