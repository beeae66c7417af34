"""Erasure requests: create (idempotent), read, list, cancel while pending, read the certificate.

Each request belongs to the API key that filed it: an ``erase`` key sees, cancels and fetches the
certificate of its own requests only (another key's answer 404, as unknown ids do); a key that also holds
``admin`` reaches every request.  ``/admin/erasure-requests`` (admin scope) lists every owner's requests and
re-queues one that could not be unlearned.  The raw user id is shown to the owner alone."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from app.deps import (
    AdminKey,
    EraseKey,
    ModelServerDep,
    Page,
    PageDep,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    actor,
    after_commit,
)
from app.erasures.schemas import (
    CertificatePublic,
    ErasureRequestCreate,
    ErasureRequestList,
    ErasureRequestPublic,
    RequeueResult,
)
from app.errors import error_responses
from app.settings import ApiSettings
from core.db.models import ApiKey, ErasureRequest, ErasureStatus, utcnow
from core.services import erasures as service

router = APIRouter(prefix="/erasure-requests", tags=["erasure requests"])
admin_router = APIRouter(prefix="/admin/erasure-requests", tags=["admin"])

ErasureStatusFilter = Annotated[ErasureStatus | None, Query(alias="status")]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="a retry with the same key (by the same API key) returns the first request instead of "
        "filing a new one; stored only as a salted hash",
    ),
]


def _caller(key: ApiKey) -> service.Caller:
    return service.Caller.api_key(key.id, admin="admin" in key.scopes)


def _public(
    session: SessionDep, settings: ApiSettings, request: ErasureRequest, caller: service.Caller
) -> ErasureRequestPublic:
    public = ErasureRequestPublic.model_validate(request)
    if not caller.shows_user_id(request):
        public.user_id = None
    if request.scope == "items":
        public.items = service.erasure_scope_items(session, request.id)
    if request.status == ErasureStatus.COMPLETED:
        public.certificate_url = f"/v1/erasure-requests/{request.id}/certificate"
    public.deadline_at_risk = service.deadline_at_risk(request, utcnow(), settings.deadline_risk_fraction)
    return public


def _listing(
    session: SessionDep,
    settings: ApiSettings,
    key: ApiKey,
    page: Page,
    status_: ErasureStatus | None,
    everyone: bool,
) -> ErasureRequestList:
    caller = _caller(key)
    rows = service.list_erasure_requests(session, status_, page.limit, page.offset, caller, everyone)
    return ErasureRequestList(requests=[_public(session, settings, r, caller) for r in rows])


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
    server: ModelServerDep,
    idempotency_key: IdempotencyKey = None,
) -> ErasureRequestPublic:
    """From the moment this returns, the data in scope is used in no prompt and no training."""
    config = service.IntakeConfig(settings.certificate_salt, settings.erasure_deadline_days)
    caller = _caller(key)
    request, created = service.create_erasure_request(
        session, body.user_id, body.items, config, idempotency_key, actor=actor(key), caller=caller
    )
    if created:  # no cached prompt of this process keeps the user's profile and history any longer
        after_commit(session, lambda: server.forget_prompts_of(body.user_id))
    else:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/erasure-requests/{request.id}"
    return _public(session, settings, request, caller)


@router.get(
    "",
    response_model=ErasureRequestList,
    responses=error_responses(401, 403, 422),
    summary="List your erasure requests",
)
def list_erasure_requests(
    session: SessionDep,
    settings: SettingsDep,
    key: EraseKey,
    page: PageDep,
    status_: ErasureStatusFilter = None,
) -> ErasureRequestList:
    """The requests this key filed, newest first (every owner's: `GET /v1/admin/erasure-requests`)."""
    return _listing(session, settings, key, page, status_, everyone=False)


@router.get(
    "/{request_id}",
    response_model=ErasureRequestPublic,
    responses=error_responses(401, 403, 404),
    summary="Read a request",
)
def get_erasure_request(
    request_id: str, session: SessionDep, settings: SettingsDep, key: EraseKey
) -> ErasureRequestPublic:
    """404 for another key's request."""
    caller = _caller(key)
    return _public(session, settings, service.get_erasure_request(session, request_id, caller), caller)


@router.post(
    "/{request_id}/cancel",
    response_model=ErasureRequestPublic,
    responses=error_responses(401, 403, 404, 409),
    summary="Cancel a request not yet in a job",
)
def cancel_erasure_request(
    request_id: str, session: SessionDep, settings: SettingsDep, key: EraseKey
) -> ErasureRequestPublic:
    """Only a received or queued request can be cancelled (409 once unlearning started); 404 for another
    key's request."""
    caller = _caller(key)
    request = service.cancel_erasure_request(session, request_id, actor=actor(key), caller=caller)
    return _public(session, settings, request, caller)


@router.get(
    "/{request_id}/certificate",
    response_model=CertificatePublic,
    responses=error_responses(401, 403, 404),
    summary="The signed unlearning certificate",
)
def get_certificate(request_id: str, session: SessionDep, key: EraseKey) -> dict[str, Any]:
    """404 until the request is completed, and for another key's request."""
    return service.get_certificate(session, request_id, _caller(key))


@admin_router.get(
    "",
    response_model=ErasureRequestList,
    responses=error_responses(401, 403, 422),
    summary="List every owner's erasure requests",
)
def list_all_erasure_requests(
    session: SessionDep,
    settings: SettingsDep,
    key: AdminKey,
    page: PageDep,
    status_: ErasureStatusFilter = None,
) -> ErasureRequestList:
    """Newest first; user ids of requests other keys filed are not shown (their salted hash is)."""
    return _listing(session, settings, key, page, status_, everyone=True)


@admin_router.post(
    "/{request_id}/requeue",
    response_model=RequeueResult,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 403, 404, 409),
    summary="Re-queue a request that could not be unlearned",
)
def requeue_erasure_request(
    request_id: str, session: SessionDep, runtime: RuntimeDep, key: AdminKey
) -> RequeueResult:
    """A `not_unlearned` request (its data already deleted) gets an exact retrain job, sent to the workers
    after the commit; 409 in any other status."""
    job_id = service.requeue_erasure_request(session, request_id, actor=actor(key))
    after_commit(session, lambda: runtime.tasks.run_job(job_id))
    return RequeueResult(request_id=request_id, job_id=job_id)
