"""serving/traffic.py on hand-made ASGI messages: a body is read whole, or refused 413 as soon as it
is (or says it is) over the limit, or 408 when it does not arrive in time; a client that leaves is
no one to answer; the metrics count by route, so made-up paths add no series."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import pytest
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.traffic import OTHER_ROUTE, ClientLeft, HttpMetrics, Refused, read_body, replay

LIMIT = 1_000
TIMEOUT = 0.2
GENEROUS = 30.0  # far beyond TIMEOUT: only a broken deadline makes a test wait this long


def scope(path: str = "/score", headers: Iterable[tuple[bytes, bytes]] = ()) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": list(headers), "query_string": b""}


class Client:
    """The messages a client's request arrives as, counting how many the server asked for."""

    def __init__(self, *messages: Message, then_wait: bool = False) -> None:
        self.messages = list(messages)
        self.asked = 0
        self.then_wait = then_wait

    async def receive(self) -> Message:
        self.asked += 1
        if self.messages:
            return self.messages.pop(0)
        if self.then_wait:
            await asyncio.Event().wait()  # a client that sends nothing more
        raise AssertionError("asked for more than the client sent")


def part(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def read(client: Client, headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    async def run() -> bytes:
        return await asyncio.wait_for(read_body(scope(headers=headers), client.receive, LIMIT, TIMEOUT), GENEROUS)

    return asyncio.run(run())


def test_a_body_in_parts_is_read_whole() -> None:
    assert read(Client(part(b'{"customer'), part(b'_ids": ["C1"]}', more=False))) == b'{"customer_ids": ["C1"]}'
    assert read(Client(part(b"", more=False))) == b""


def test_a_body_declared_over_the_limit_is_refused_before_any_of_it_is_read() -> None:
    client = Client(part(b"x" * 10))
    with pytest.raises(Refused) as refused:
        read(client, headers=[(b"content-length", b"200000000")])
    assert refused.value.status == 413 and "200,000,000 bytes; at most 1,000" in str(refused.value)
    assert refused.value.headers == {"Connection": "close"}
    assert client.asked == 0


def test_a_chunked_body_over_the_limit_is_refused_as_soon_as_it_is_over() -> None:
    # given a chunked body of 10 parts of 300 bytes (no Content-Length)
    client = Client(*[part(b"x" * 300) for _ in range(10)])
    # when it is read, then it is refused after the 4th part (1,200 bytes), the rest never read
    with pytest.raises(Refused) as refused:
        read(client)
    assert refused.value.status == 413 and "over 1,000 bytes" in str(refused.value)
    assert client.asked == 4


def test_a_body_that_does_not_arrive_in_time_is_a_408() -> None:
    with pytest.raises(Refused) as refused:
        read(Client(part(b'{"customer'), then_wait=True))
    assert refused.value.status == 408 and "not whole within 0.2 s" in str(refused.value)


def test_a_client_that_leaves_mid_body_has_no_answer_coming() -> None:
    with pytest.raises(ClientLeft):
        read(Client(part(b'{"customer'), {"type": "http.disconnect"}))


def test_the_replayed_body_comes_whole_then_the_connections_own_messages() -> None:
    client = Client({"type": "http.disconnect"})

    async def run() -> list[Message]:
        receive = replay(b"{}", client.receive)
        return [await receive(), await receive()]

    assert asyncio.run(run()) == [part(b"{}", more=False), {"type": "http.disconnect"}]


# ---------------------------------------------------------------------------------------------
# Metrics by route


def answer_with(status: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def ignore(message: Message) -> None:
    pass


async def nothing() -> Message:
    return part(b"", more=False)


def answered(route: str, status: int) -> float:
    return REGISTRY.get_sample_value("custlens_http_requests_total", {"route": route, "status": str(status)}) or 0.0


def series() -> int:
    return sum(len(family.samples) for family in REGISTRY.collect() if family.name.startswith("custlens_http"))


def test_made_up_paths_are_counted_under_one_label_and_add_no_series() -> None:
    # given the metrics after one unknown path
    metrics = HttpMetrics(answer_with(404), routes={"/score", "/healthz"})
    asyncio.run(metrics(scope("/favicon.ico"), nothing, ignore))
    before_series, before_count = series(), answered(OTHER_ROUTE, 404)

    # when 1,000 made-up paths are asked for
    async def made_up() -> None:
        for _ in range(1000):
            await metrics(scope(f"/{random.getrandbits(64):x}"), nothing, ignore)

    asyncio.run(made_up())
    # then they count under `other`, and no series was added
    assert answered(OTHER_ROUTE, 404) == before_count + 1000
    assert series() == before_series


def test_a_route_is_counted_by_its_status() -> None:
    before = answered("/score", 413)
    asyncio.run(HttpMetrics(answer_with(413), routes={"/score"})(scope("/score"), nothing, ignore))
    assert answered("/score", 413) == before + 1


def test_a_request_whose_client_left_unanswered_is_not_counted_and_a_crash_is_a_500() -> None:
    async def leave(scope: Scope, receive: Receive, send: Send) -> None:
        pass  # a client that disconnected mid-body: nothing is sent

    async def crash(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    before = {status: answered("/kpis", status) for status in (200, 500)}
    asyncio.run(HttpMetrics(leave, routes={"/kpis"})(scope("/kpis"), nothing, ignore))
    with pytest.raises(RuntimeError):
        asyncio.run(HttpMetrics(crash, routes={"/kpis"})(scope("/kpis"), nothing, ignore))
    assert answered("/kpis", 200) == before[200] and answered("/kpis", 500) == before[500] + 1
