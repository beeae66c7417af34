"""API keys (admin scope): create one; the service stores only its hash."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated
from app.deps import AdminKey, SessionDep
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
    """The key is in this response only; the service stores its sha256."""
    plaintext = service.create_api_key(session, body.name, body.scopes)
    return ApiKeyCreated(name=body.name, scopes=sorted(set(body.scopes)), key=plaintext)
