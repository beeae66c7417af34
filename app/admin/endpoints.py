"""Admin: unlearning jobs (list, read, trigger a batch now), adapter versions (list, promote, roll back),
the activation log, API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from app.admin.schemas import (
    ActivationList,
    ActivationPublic,
    AdapterVersionList,
    AdapterVersionPublic,
    ApiKeyCreate,
    ApiKeyCreated,
    JobList,
    JobPublic,
    PromoteRequest,
    TriggerResult,
)
from app.deps import AdminKey, PageDep, RuntimeDep, SessionDep, actor, after_commit
from app.errors import Conflict, error_responses
from app.runtime import Runtime
from core.db.models import AdapterVersion, JobStatus, UnlearningJob, VersionStatus
from core.events import EventPublisher, promotion_event
from core.services import api_keys as api_key_service
from core.services import batching as batching_service
from core.services import registry as registry_service

router = APIRouter(prefix="/admin", tags=["admin"])


def _job(session: Session, job: UnlearningJob) -> JobPublic:
    public = JobPublic.model_validate(job)
    public.request_ids = batching_service.job_request_ids(session, job.id)
    return public


@router.get(
    "/jobs", response_model=JobList, responses=error_responses(401, 403, 422), summary="List unlearning jobs"
)
def list_jobs(
    session: SessionDep,
    key: AdminKey,
    page: PageDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> JobList:
    """Newest first."""
    jobs = batching_service.list_jobs(session, status_, page.limit, page.offset)
    return JobList(jobs=[_job(session, j) for j in jobs])


@router.get(
    "/jobs/{job_id}", response_model=JobPublic, responses=error_responses(401, 403, 404), summary="Read a job"
)
def get_job(job_id: int, session: SessionDep, key: AdminKey) -> JobPublic:
    """Phase, progress, the metrics and thresholds of verification, the verdict."""
    return _job(session, batching_service.get_job(session, job_id))


@router.post(
    "/jobs/trigger",
    response_model=TriggerResult,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 403),
    summary="Batch every queued request now",
)
def trigger_batch(session: SessionDep, runtime: RuntimeDep, key: AdminKey) -> TriggerResult:
    """Forms jobs from all queued requests regardless of waiting time; each is sent to the workers only
    after the transaction that created it commits."""
    job_ids = batching_service.trigger_batch_now(
        session, batching_service.job_settings_from(runtime.settings)
    )
    for job_id in job_ids:
        after_commit(session, lambda job_id=job_id: runtime.tasks.run_job(job_id))  # type: ignore[misc]
    return TriggerResult(job_ids=job_ids)


def _version(session: Session, version: AdapterVersion, active_id: str | None) -> AdapterVersionPublic:
    public = AdapterVersionPublic.model_validate(version)
    public.lineage = registry_service.lineage(session, version.id)
    public.active = version.id == active_id
    return public


@router.get(
    "/adapters",
    response_model=AdapterVersionList,
    responses=error_responses(401, 403, 422),
    summary="List adapter versions",
)
def list_adapters(
    session: SessionDep, key: AdminKey, status_: Annotated[VersionStatus | None, Query(alias="status")] = None
) -> AdapterVersionList:
    """Oldest first, with lineage, metrics and status."""
    active = registry_service.active_adapter(session)
    active_id = active.version_id if active else None
    versions = [_version(session, v, active_id) for v in registry_service.list_versions(session, status_)]
    return AdapterVersionList(active_version_id=active_id, versions=versions)


@router.get(
    "/adapters/{version_id}",
    response_model=AdapterVersionPublic,
    responses=error_responses(401, 403, 404),
    summary="Read a version",
)
def get_adapter(version_id: str, session: SessionDep, key: AdminKey) -> AdapterVersionPublic:
    active = registry_service.active_adapter(session)
    return _version(
        session, registry_service.get_version(session, version_id), active.version_id if active else None
    )


def _move_alias(
    session: Session, runtime: Runtime, version_id: str, kind: str, who: str, reason: str | None
) -> AdapterVersionPublic:
    current = registry_service.active_adapter(session)
    if current is None:
        raise Conflict("no adapter version is active yet (bootstrap first)")
    active = registry_service.promote_version(
        session, version_id, current.version_id, current.counter, who, kind=kind, reason=reason
    )
    event = promotion_event(active.version_id, active.counter, current.version_id, kind)

    def announce() -> None:
        EventPublisher(runtime.settings.redis_url).publish(event)  # other API processes
        runtime.watcher.wake()  # this one

    after_commit(session, announce)
    return _version(session, registry_service.get_version(session, version_id), active.version_id)


_MOVE_ERRORS = error_responses(401, 403, 404, 409, 422)


@router.post(
    "/adapters/{version_id}/promote",
    response_model=AdapterVersionPublic,
    responses=_MOVE_ERRORS,
    summary="Promote",
)
def promote_adapter(
    version_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    key: AdminKey,
    body: PromoteRequest | None = None,
) -> AdapterVersionPublic:
    """Make a version active (compare-and-swap on the current one).  409 for a version that may carry
    data of a completed erasure, whose weights are destroyed, or that is already active."""
    return _move_alias(session, runtime, version_id, "promote", actor(key), body.reason if body else None)


@router.post(
    "/adapters/{version_id}/rollback",
    response_model=AdapterVersionPublic,
    responses=_MOVE_ERRORS,
    summary="Roll back",
)
def rollback_adapter(
    version_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    key: AdminKey,
    body: PromoteRequest | None = None,
) -> AdapterVersionPublic:
    """Return to an earlier version; refused (409) when it predates a completed erasure."""
    return _move_alias(session, runtime, version_id, "rollback", actor(key), body.reason if body else None)


@router.get(
    "/activations",
    response_model=ActivationList,
    responses=error_responses(401, 403),
    summary="Activation log",
)
def list_activations(
    session: SessionDep, key: AdminKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> ActivationList:
    """Which version became active when (append-only), newest first."""
    events = registry_service.activation_events(session, limit)
    return ActivationList(events=[ActivationPublic.model_validate(e) for e in events])


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 422),
    summary="Create an API key",
)
def create_api_key(body: ApiKeyCreate, session: SessionDep, key: AdminKey) -> ApiKeyCreated:
    """The key is in this response only; the service stores its sha256."""
    plaintext = api_key_service.create_api_key(session, body.name, body.scopes)
    return ApiKeyCreated(name=body.name, scopes=sorted(set(body.scopes)), key=plaintext)
