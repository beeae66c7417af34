"""Request dependencies as ``Annotated`` aliases.

``SessionDep``: one session per request; the edge owns the transaction: commit when the endpoint returns
(before the response is sent, so nothing acknowledged can be lost), roll back on any error.  Work to do
after the commit (enqueue a job, publish an event) is registered with ``after_commit`` and dropped on
rollback.

``RecommendKey`` / ``EraseKey`` / ``AdminKey``: the caller's API key (``X-API-Key`` header, or
``Authorization: Bearer <key>``), which must hold that scope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Security
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


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> ApiSettings:
    return runtime.settings


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


def get_model_server(runtime: RuntimeDep) -> ModelServer:
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


def _presented_key(
    header: Annotated[str | None, Security(_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    key = header or (bearer.credentials if bearer else None)
    if not key:
        raise Unauthorized("an API key is required (X-API-Key header or Authorization: Bearer)")
    return key


def require_scope(scope: str) -> Callable[..., ApiKey]:
    def dependency(session: SessionDep, key: Annotated[str, Depends(_presented_key)]) -> ApiKey:
        return api_key_service.authenticate(session, key, scope)

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


def get_page(
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many rows")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW_NUMBER, description="skip this many rows")] = 0,
) -> Page:
    return Page(limit, offset)


PageDep = Annotated[Page, Depends(get_page)]
