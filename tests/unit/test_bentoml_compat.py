"""The BentoML request-timeout fix (serving/bentoml_compat.py): a slow endpoint still gets BentoML's
504 within the timeout, no timer is left behind per request (stock BentoML 1.4.39 leaves one,
which is why the fix exists), and on another BentoML version BentoML is left alone."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.types import Message, Receive, Scope, Send

from custlens.settings import PROJECT_ROOT
from serving import bentoml_compat
from serving.bentoml_compat import PINNED_BENTOML, cancel_request_timers, timeout_call

TIMEOUT = 0.2
# Far beyond TIMEOUT: only a broken middleware makes a test wait this long.
GENEROUS = 30.0


@pytest.fixture
def stock_bentoml(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """TimeoutMiddleware as BentoML ships it for this test, whatever an earlier test (or a
    service built in this process) applied; put back as it was afterwards. Yields BentoML's call."""
    stock = getattr(TimeoutMiddleware, bentoml_compat._STOCK_CALL, TimeoutMiddleware.__call__)
    monkeypatch.setattr(TimeoutMiddleware, "__call__", stock)
    # Recorded (absent or present) so that undo restores it, then removed: "not patched".
    monkeypatch.setattr(TimeoutMiddleware, bentoml_compat._STOCK_CALL, stock, raising=False)
    monkeypatch.delattr(TimeoutMiddleware, bentoml_compat._STOCK_CALL)
    yield stock


def http_scope() -> Scope:
    return {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def live_timers(loop: asyncio.AbstractEventLoop) -> int:
    # `_scheduled` is asyncio's private heap of call_later handles; there is no public way to
    # count a loop's pending timers. Cancelled handles stay in the heap until the loop drops
    # them, so only the live ones count. Fine in a test: if asyncio renames it this fails loudly.
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return sum(1 for handle in scheduled if not handle.cancelled())


async def timers_left_by(call: Any, requests: int) -> int:
    """Live timers added to this loop by `requests` fast requests through TimeoutMiddleware(call)."""
    middleware = TimeoutMiddleware(answer_at_once, timeout=60.0)  # BentoML's default timeout
    loop = asyncio.get_running_loop()
    before = live_timers(loop)
    for _ in range(requests):
        sent: list[Message] = []

        async def collect(message: Message, sent: list[Message] = sent) -> None:
            sent.append(message)

        await asyncio.wait_for(call(middleware, http_scope(), no_body, collect), GENEROUS)
        assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"
    await asyncio.sleep(0)  # one more loop turn, in case a timer is cancelled by a callback
    return live_timers(loop) - before


def test_stock_bentoml_leaves_a_live_timer_per_request(stock_bentoml: Any) -> None:
    # given BentoML's own TimeoutMiddleware call, when 50 requests have been answered
    left = asyncio.run(timers_left_by(stock_bentoml, 50))
    # then each of them still has its 60-second timer armed: the leak the fix exists for
    assert left == 50


def test_patched_middleware_leaves_no_timer_behind(stock_bentoml: Any) -> None:
    assert cancel_request_timers()
    assert TimeoutMiddleware.__call__ is timeout_call

    left = asyncio.run(timers_left_by(TimeoutMiddleware.__call__, 50))

    assert left == 0


def test_patch_is_applied_once_and_keeps_bentomls_call(stock_bentoml: Any) -> None:
    assert cancel_request_timers() and cancel_request_timers()

    assert TimeoutMiddleware.__call__ is timeout_call
    assert getattr(TimeoutMiddleware, bentoml_compat._STOCK_CALL) is stock_bentoml


def test_a_response_started_within_the_timeout_is_not_cut_off(stock_bentoml: Any) -> None:
    # BentoML's limit is on the first byte: a response that has started may take longer.
    cancel_request_timers()

    async def start_then_dawdle(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(3 * TIMEOUT)
        await send({"type": "http.response.body", "body": b"slow but whole"})

    async def run() -> list[Message]:
        sent: list[Message] = []

        async def collect(message: Message) -> None:
            sent.append(message)

        middleware = TimeoutMiddleware(start_then_dawdle, timeout=TIMEOUT)
        await asyncio.wait_for(middleware(http_scope(), no_body, collect), GENEROUS)
        return sent

    sent = asyncio.run(run())

    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"slow but whole"


def test_a_slow_endpoint_gets_bentomls_504_within_the_timeout() -> None:
    # given a BentoML service with a 0.2 s timeout, served through the patched middleware in a
    # process of its own (one BentoML app per process: see tests/support/slowpoke.py)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    # when an endpoint takes longer than the timeout (the process is waited on, with a bound
    # only a hang reaches)
    done = subprocess.run([sys.executable, "-m", "tests.support.slowpoke"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])

    # then the client gets BentoML's 504 and JSON error, not before the timeout ran out
    assert got["patched"] and got["at_once"] == "ok"
    assert got["status"] == 504
    assert got["body"] == {"error": f"Not able to process the request in {got['timeout']} seconds"}
    assert got["timeout"] <= got["waited"] < GENEROUS


def test_another_bentoml_version_is_left_alone_with_a_warning(
    stock_bentoml: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bentoml_compat, "installed_bentoml", lambda: "1.4.40")

    with caplog.at_level(logging.WARNING, logger="custlens.serving"):
        applied = cancel_request_timers()

    assert not applied
    assert TimeoutMiddleware.__call__ is stock_bentoml
    assert not hasattr(TimeoutMiddleware, bentoml_compat._STOCK_CALL)
    assert "bentoml 1.4.40 is installed" in caplog.text and PINNED_BENTOML in caplog.text


def test_the_pinned_version_is_the_installed_one() -> None:
    # The fix is tested against the installed BentoML; a new pin needs a new look at the leak.
    assert bentoml_compat.installed_bentoml() == PINNED_BENTOML
