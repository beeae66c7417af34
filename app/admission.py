"""What may enter the app: admission control and the request body limit (pure ASGI middleware).

Admission: synchronous dependencies and endpoints run in AnyIO's worker threads (40), and each request
holds one database connection from its session's first query to its commit (the pool has size +
overflow connections).  Let more requests in than the pool can serve and those waiting for a connection
take every thread, while those holding one cannot get a thread back to commit: the API stalls until the
pool times out and answers 500s.  So at most ``limit`` requests (the pool's capacity) are inside the app
at once; the others wait here, in the event loop (holding no thread and no connection), for at most
``wait_seconds``, and are then refused with 503 + ``Retry-After``, as are those beyond ``max_waiting``.
A request that is done with the database before it is done (a recommendation waiting for the model)
gives its place back early with ``leave_admission``: the model has its own bounded queue
(``core.serving.ModelServer.admit``), and erasures must not wait behind recommendations.

Body limit: a body larger than ``max_bytes`` is refused with 413 before any of it is parsed, from its
``Content-Length`` when it declares one, otherwise as soon as the bytes received pass the limit.  Routes
in ``uploads`` (the CSV import) accept up to their own limit, but only from a caller whose key holds
the route's scope: an anonymous caller can never make the app read more than ``max_bytes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response

# liveness and scrapes never touch the database: they are never queued behind the load
NOT_ADMITTED = frozenset({"/healthz", "/metrics"})
_PLACE = "e2u_admission_place"  # the request's place, in the ASGI scope's per-request state


class _Place:
    """One admitted request's place; given back once, by the middleware or early by the request."""

    def __init__(self, places: asyncio.Semaphore, loop: asyncio.AbstractEventLoop) -> None:
        self._places = places
        self._loop = loop
        self._held = True

    def release(self) -> None:
        """Give the place back (event-loop thread only; a second call does nothing)."""
        if self._held:
            self._held = False
            self._places.release()

    def release_from_thread(self) -> None:
        self._loop.call_soon_threadsafe(self.release)


def leave_admission(state: dict[str, Any]) -> None:
    """Give this request's admission place back now, from the worker thread of a sync endpoint that
    holds no database connection any more (``state``: the ASGI scope's state, ``request.scope["state"]``).
    A request that was not admitted (an exempt path, a test without the middleware) is left alone."""
    place = state.get(_PLACE)
    if isinstance(place, _Place):
        place.release_from_thread()


class AdmissionControl:
    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        wait_seconds: float,
        max_waiting: int,
        exempt: frozenset[str] = NOT_ADMITTED,
    ) -> None:
        self.app = app
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.max_waiting = max_waiting
        self.exempt = exempt
        self.waiting = 0
        self._places = asyncio.Semaphore(limit)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        places = await self._enter()
        if places is None:
            message = f"the service is at capacity ({self.limit} requests in progress); retry later"
            await error_response(503, "overloaded", message)(scope, receive, send)
            return
        place = _Place(places, asyncio.get_running_loop())
        scope.setdefault("state", {})[_PLACE] = place
        try:
            await self.app(scope, receive, send)
        finally:
            place.release()

    async def _enter(self) -> asyncio.Semaphore | None:
        """The semaphore whose place was taken, or None when refused."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a semaphore serves one event loop (tests run an app in several)
            self._places, self._loop = asyncio.Semaphore(self.limit), loop
        places = self._places
        if places.locked() and self.waiting >= self.max_waiting:
            return None
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_seconds):
                await places.acquire()
        except TimeoutError:
            return None
        finally:
            self.waiting -= 1
        return places


@dataclass(frozen=True)
class Upload:
    """A route that takes large bodies: up to ``max_bytes`` from a caller whose key ``authorized`` accepts
    (called in a worker thread with the presented key; false for an unknown key or a missing scope)."""

    max_bytes: int
    authorized: Callable[[str], bool]


def presented_key(headers: Headers) -> str | None:
    """The API key of ``X-API-Key`` or ``Authorization: Bearer`` (as ``app.deps`` reads it)."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, uploads: dict[str, Upload] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = await self._limit(scope["path"], headers)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # the body parsers re-raise HTTPExceptions: the error handler answers
                    raise HTTPException(413, _too_large_text(limit))
            return message

        await self.app(scope, counted, send)

    async def _limit(self, path: str, headers: Headers) -> int:
        upload = self.uploads.get(path)
        if upload is None or upload.max_bytes <= self.max_bytes:
            return self.max_bytes
        key = presented_key(headers)
        if key is None:
            return self.max_bytes
        authorized: bool = await run_in_threadpool(upload.authorized, key)
        return upload.max_bytes if authorized else self.max_bytes


def _too_large_text(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


def _too_large(limit: int) -> JSONResponse:
    return error_response(413, "payload_too_large", _too_large_text(limit))
