"""API keys (admin scope): create, list and revoke; the service stores only a key's hash."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyView
from app.deps import AdminKey, SessionDep, actor, after_commit
from app.errors import error_responses
from core.services import api_keys as service

router = APIRouter(prefix="/admin/api-keys", tags=["admin"])


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 422),
    summary="Create an API key",
)
def create_api_key(body: ApiKeyCreate, session: SessionDep, key: AdminKey) -> ApiKeyCreated:
    """The key is in this response only; the service stores its sha256.  The list shows the key's id next
    to its first characters."""
    lifetime = None if body.expires_in is None else service.parse_duration(body.expires_in)
    plaintext = service.create_api_key(session, body.name, body.scopes, expires_in=lifetime)
    created = service.key_of(session, plaintext)
    return ApiKeyCreated(name=body.name, scopes=created.scopes, expires_at=created.expires_at, key=plaintext)


@router.get(
    "",
    response_model=list[ApiKeyView],
    responses=error_responses(401, 403),
    summary="List the API keys (never the keys themselves)",
)
def list_api_keys(session: SessionDep, key: AdminKey) -> list[ApiKeyView]:
    """Every key, revoked ones included, with when it was last used."""
    return [ApiKeyView.model_validate(k) for k in service.list_api_keys(session)]


@router.post(
    "/{key_id}/revoke",
    response_model=ApiKeyView,
    responses=error_responses(401, 403, 404, 422),
    summary="Revoke an API key",
)
def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)], request: Request, session: SessionDep, key: AdminKey
) -> ApiKeyView:
    """The key authenticates no more: at once in this process, within E2U_API_KEY_CACHE_SECONDS (2 s by
    default) in the others.  Idempotent."""
    revoked = service.revoke_api_key(session, key_id, actor(key))
    verified: service.VerifiedKeys = request.app.state.verified_keys
    after_commit(session, lambda: verified.forget(key_id))
    return ApiKeyView.model_validate(revoked)
