"""Every use of BentoML's private internals, fenced: the request-timeout fix for BentoML 1.4.39,
applied only when the installed BentoML is exactly that version.

BentoML 1.4.39's `TimeoutMiddleware` (bentoml._internal.server.http.traffic) arms
`loop.call_later(timeout, ...)` for every request and never cancels it: each request leaves a
timer, a future and a context alive for the timeout (60 s by default), 100,000+ objects at 2,000
requests/s, which drag full GC passes into the tail latency. `cancel_request_timers` replaces the
middleware's `__call__` with one that keeps the behaviour (a 504 with BentoML's JSON error when
no response has started within the timeout) on `asyncio.timeout`, whose timer is cancelled when
the request ends. Another BentoML version may have fixed the leak or changed the middleware, so
there the patch is not applied and a warning says so; tests/unit/test_bentoml_compat.py shows the
leak, the fix and the 504.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

logger = logging.getLogger("custlens.serving")

# The BentoML release whose TimeoutMiddleware the replacement below was written against and
# tested on; keep it equal to the pin in pyproject.toml / requirements.lock.
PINNED_BENTOML = "1.4.39"

# Set on TimeoutMiddleware when patched: BentoML's own __call__, kept for tests and for a look.
_STOCK_CALL = "_custlens_stock_call"


def installed_bentoml() -> str:
    return importlib.metadata.version("bentoml")


def cancel_request_timers() -> bool:
    """Make BentoML's request timeout cancel its timer when the request ends (idempotent).

    True when the replacement is in place; False, with a warning, when the installed BentoML is
    not PINNED_BENTOML and BentoML was left as it is.
    """
    version = installed_bentoml()
    if version != PINNED_BENTOML:
        logger.warning(
            "bentoml %s is installed, the request-timer fix is written for %s: not applied "
            "(check whether TimeoutMiddleware still leaves a timer per request, then update PINNED_BENTOML)",
            version,
            PINNED_BENTOML,
        )
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
