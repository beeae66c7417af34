"""Request dependencies as ``Annotated`` aliases.

``SessionDep``: one session per request; the edge owns the transaction: commit when the endpoint returns
(before the response is sent, so nothing acknowledged can be lost), roll back on any error.  Work to do
after the commit (enqueue a job, publish an event) is registered with ``after_commit`` and dropped on
rollback.

``RecommendKey`` / ``EraseKey`` / ``AdminKey``: the caller's API key (``X-API-Key`` header, or
``Authorization: Bearer <key>``), which must hold that scope.  Failed authentications (no key, an unknown
or revoked one) are counted per client address (``AuthFailureLimiter``): past the limit, 429 + Retry-After.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.runtime import Runtime
from app.schemas import MAX_ROW_NUMBER
from app.settings import ApiSettings
from core.db.models import ApiKey
from core.services import api_keys as api_key_service
from core.services.errors import Unauthorized
from core.serving import ModelServer

log = logging.getLogger(__name__)

_AFTER_COMMIT = "e2u_after_commit"


# The trivial dependencies are ``async``: FastAPI runs a plain ``def`` dependency in the thread pool, one
# thread hop each per request; these only read attributes, so they run on the event loop instead.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> ApiSettings:
    return runtime.settings


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


async def get_model_server(runtime: RuntimeDep) -> ModelServer:
    return runtime.model_server


ModelServerDep = Annotated[ModelServer, Depends(get_model_server)]


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once the request's transaction has committed (never if it rolls back)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    session = runtime.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        session.info.pop(_AFTER_COMMIT, None)
        raise
    finally:
        actions = session.info.pop(_AFTER_COMMIT, [])
        session.close()
    for action in actions:
        try:
            action()
        except Exception:  # the committed state is the truth; the beat re-enqueues what was not sent
            log.exception("after-commit action failed")


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (`e2u apikey create`).")
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


async def _presented_key(
    header: Annotated[str | None, Security(_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str | None:
    return header or (bearer.credentials if bearer else None)


@dataclass
class AuthFailureLimiter:
    """Failed authentications per client address in a sliding window: once an address has ``limit`` in the
    last ``window_seconds``, its requests are refused (429) until the oldest leaves the window, so keys
    cannot be guessed at speed.  Memory: at most ``max_addresses`` addresses (the stalest go first)."""

    limit: int = 10
    window_seconds: float = 60.0
    max_addresses: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again; None when it may now."""
        now = self.clock()
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                return None
            while times and times[0] <= now - self.window_seconds:
                times.popleft()
            if not times:
                del self._failures[address]
                return None
            if len(times) < self.limit:
                return None
            return max(1, math.ceil(times[0] + self.window_seconds - now))

    def failed(self, address: str) -> None:
        with self._lock:
            times = self._failures.pop(address, deque())  # re-inserted last: dict order is staleness
            times.append(self.clock())
            self._failures[address] = times
            while len(self._failures) > self.max_addresses:
                del self._failures[next(iter(self._failures))]


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def require_scope(scope: str) -> Callable[..., ApiKey]:
    def dependency(
        request: Request, session: SessionDep, key: Annotated[str | None, Depends(_presented_key)]
    ) -> ApiKey:
        limiter: AuthFailureLimiter = request.app.state.auth_failures
        address = _client_address(request)
        wait = limiter.retry_after(address)
        if wait is not None:
            raise HTTPException(
                429, "too many failed authentications from this address", {"Retry-After": str(wait)}
            )
        try:
            if not key:
                raise Unauthorized("an API key is required (X-API-Key header or Authorization: Bearer)")
            verified: api_key_service.VerifiedKeys = request.app.state.verified_keys
            return api_key_service.authenticate(session, key, scope, verified=verified)
        except Unauthorized:
            limiter.failed(address)
            raise

    dependency.__name__ = f"require_{scope}_scope"
    return dependency


RecommendKey = Annotated[ApiKey, Depends(require_scope("recommend"))]
EraseKey = Annotated[ApiKey, Depends(require_scope("erase"))]
AdminKey = Annotated[ApiKey, Depends(require_scope("admin"))]


def actor(key: ApiKey) -> str:
    """How the audit log names the caller."""
    return f"api_key:{key.id}:{key.name}"


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


async def get_page(
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many rows")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW_NUMBER, description="skip this many rows")] = 0,
) -> Page:
    return Page(limit, offset)


PageDep = Annotated[Page, Depends(get_page)]
