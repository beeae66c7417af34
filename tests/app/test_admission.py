"""Admission control as a plain ASGI middleware: at most ``limit`` requests inside, the others wait in the
event loop up to ``wait_seconds`` (then 503 + Retry-After), no more than ``max_waiting`` of them."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send

from app.admission import AdmissionControl


class Blocking:
    """An app whose requests stay inside until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.inside = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.inside += 1
        await self.release.wait()
        self.inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: Any, path: str = "/v1/x") -> tuple[int, dict[str, str]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
    start = sent[0]
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}


def test_requests_beyond_the_limit_wait_then_are_refused_with_retry_after() -> None:
    async def scenario() -> None:
        inner = Blocking()
        app = AdmissionControl(inner, limit=2, wait_seconds=0.3, max_waiting=1)
        first = [asyncio.create_task(_call(app)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert inner.inside == 2
        waiting = asyncio.create_task(_call(app))
        await asyncio.sleep(0.05)
        status, headers = await _call(app)  # the queue is full: refused at once
        assert status == 503 and headers["retry-after"].isdigit()
        status, headers = await waiting  # waited 0.3 s for a place: none freed
        assert status == 503 and headers["retry-after"].isdigit()
        assert inner.inside == 2
        inner.release.set()
        assert [s for s, _ in await asyncio.gather(*first)] == [200, 200]

    asyncio.run(scenario())


def test_a_waiting_request_enters_when_a_place_frees() -> None:
    async def scenario() -> None:
        inner = Blocking()
        app = AdmissionControl(inner, limit=1, wait_seconds=5, max_waiting=10)
        first = asyncio.create_task(_call(app))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(_call(app))
        await asyncio.sleep(0.05)
        assert inner.inside == 1  # the second waits outside, holding no thread
        inner.release.set()
        assert (await first)[0] == 200 and (await second)[0] == 200

    asyncio.run(scenario())
