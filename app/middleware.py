"""The outermost middleware of the app (pure ASGI): a request id for every request, the access log line,
the request metrics, and the answer to an unhandled error.

Request id: an incoming ``X-Request-ID`` is kept when well-formed (``REQUEST_ID_PATTERN``: no spaces, no
control characters, at most 128 characters), otherwise one is made; it is bound to the request's log
context (``core.logs``: every line written while serving the request names it) and echoed in the
response's ``X-Request-ID``.

Unhandled errors: Starlette's last-resort handler answers them outside every middleware, so that the
request's metrics never saw the 500 and its log lines lost the request id; here they are answered (by
``app.errors.render_error``, which logs the redacted stack), counted and logged like any other response.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import render_error
from app.metrics import ApiMetrics
from core import logs

access = logging.getLogger("e2u.access")
log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_from(presented: str | None) -> str:
    """The caller's id when well-formed, else a new one (32 hex digits)."""
    if presented is not None and REQUEST_ID_PATTERN.fullmatch(presented):
        return presented
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        rid = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if response_started:  # a streamed body broke off: nothing more can be sent
                log.error("response to %s %s broke off", request.method, ApiMetrics.route_label(request))
            else:
                response = await render_error(request, error)
                await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = ApiMetrics.route_label(request)
            # the route template, never the path or the query: paths carry user ids (uvicorn's own access
            # log, which prints the path, is off: ``e2u serve``)
            access.info("%s %s %s %.1fms", request.method, route, status, elapsed * 1000)
            runtime = getattr(request.app.state, "runtime", None) if "app" in scope else None
            if runtime is not None:
                runtime.metrics.observe_request(request.method, route, status, elapsed)
            logs.request_id.reset(token)
