"""Erasure requests: create (idempotent), read, list, cancel while pending, read the certificate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from app.deps import EraseKey, PageDep, SessionDep, SettingsDep, actor
from app.erasures.schemas import (
    CertificatePublic,
    ErasureRequestCreate,
    ErasureRequestList,
    ErasureRequestPublic,
)
from app.errors import error_responses
from core.db.models import ErasureRequest, ErasureStatus
from core.services import erasures as service

router = APIRouter(prefix="/erasure-requests", tags=["erasure requests"])

ErasureStatusFilter = Annotated[ErasureStatus | None, Query(alias="status")]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="a retry with the same key returns the first request instead of filing a new one",
    ),
]


def _public(session: SessionDep, request: ErasureRequest) -> ErasureRequestPublic:
    public = ErasureRequestPublic.model_validate(request)
    if request.scope == "items":
        public.items = service.erasure_scope_items(session, request.id)
    if request.status == ErasureStatus.COMPLETED:
        public.certificate_url = f"/v1/erasure-requests/{request.id}/certificate"
    return public


@router.post(
    "",
    response_model=ErasureRequestPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        **error_responses(401, 403, 404, 409, 422),
        200: {
            "model": ErasureRequestPublic,
            "description": "an earlier request with the same Idempotency-Key",
        },
    },
    summary="File an erasure request",
)
def create_erasure_request(
    body: ErasureRequestCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    key: EraseKey,
    idempotency_key: IdempotencyKey = None,
) -> ErasureRequestPublic:
    """From the moment this returns, the data in scope is used in no prompt and no training."""
    config = service.IntakeConfig(settings.certificate_salt, settings.erasure_deadline_days)
    request, created = service.create_erasure_request(
        session, body.user_id, body.items, config, idempotency_key, actor=actor(key)
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/erasure-requests/{request.id}"
    return _public(session, request)


@router.get(
    "",
    response_model=ErasureRequestList,
    responses=error_responses(401, 403, 422),
    summary="List erasure requests",
)
def list_erasure_requests(
    session: SessionDep, key: EraseKey, page: PageDep, status_: ErasureStatusFilter = None
) -> ErasureRequestList:
    """Newest first."""
    rows = service.list_erasure_requests(session, status_, page.limit, page.offset)
    return ErasureRequestList(requests=[_public(session, r) for r in rows])


@router.get(
    "/{request_id}",
    response_model=ErasureRequestPublic,
    responses=error_responses(401, 403, 404),
    summary="Read a request",
)
def get_erasure_request(request_id: str, session: SessionDep, key: EraseKey) -> ErasureRequestPublic:
    return _public(session, service.get_erasure_request(session, request_id))


@router.post(
    "/{request_id}/cancel",
    response_model=ErasureRequestPublic,
    responses=error_responses(401, 403, 404, 409),
    summary="Cancel a request not yet in a job",
)
def cancel_erasure_request(request_id: str, session: SessionDep, key: EraseKey) -> ErasureRequestPublic:
    """Only a received or queued request can be cancelled (409 once unlearning started)."""
    return _public(session, service.cancel_erasure_request(session, request_id, actor=actor(key)))


@router.get(
    "/{request_id}/certificate",
    response_model=CertificatePublic,
    responses=error_responses(401, 403, 404),
    summary="The signed unlearning certificate",
)
def get_certificate(request_id: str, session: SessionDep, key: EraseKey) -> dict[str, Any]:
    """404 until the request is completed."""
    return service.get_certificate(session, request_id)
