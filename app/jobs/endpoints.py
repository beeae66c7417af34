"""Unlearning jobs (admin scope): list, read, trigger a batch now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from sqlalchemy.orm import Session

from app.deps import AdminKey, PageDep, RuntimeDep, SessionDep, after_commit
from app.errors import error_responses
from app.jobs.schemas import JobList, JobPublic, TriggerResult
from app.schemas import MAX_ROW_NUMBER
from core.db.models import JobStatus, UnlearningJob
from core.services import batching as service

router = APIRouter(prefix="/admin/jobs", tags=["admin"])

JobStatusFilter = Annotated[JobStatus | None, Query(alias="status")]


def _public(session: Session, job: UnlearningJob) -> JobPublic:
    public = JobPublic.model_validate(job)
    public.request_ids = service.job_request_ids(session, job.id)
    return public


@router.get(
    "", response_model=JobList, responses=error_responses(401, 403, 422), summary="List unlearning jobs"
)
def list_jobs(session: SessionDep, key: AdminKey, page: PageDep, status_: JobStatusFilter = None) -> JobList:
    """Newest first."""
    jobs = service.list_jobs(session, status_, page.limit, page.offset)
    return JobList(jobs=[_public(session, j) for j in jobs])


@router.get(
    "/{job_id}", response_model=JobPublic, responses=error_responses(401, 403, 404), summary="Read a job"
)
def get_job(
    job_id: Annotated[int, Path(ge=1, le=MAX_ROW_NUMBER)], session: SessionDep, key: AdminKey
) -> JobPublic:
    """Phase, progress, the metrics and thresholds of verification, the verdict."""
    return _public(session, service.get_job(session, job_id))


@router.post(
    "/trigger",
    response_model=TriggerResult,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 403),
    summary="Batch every queued request now",
)
def trigger_batch(session: SessionDep, runtime: RuntimeDep, key: AdminKey) -> TriggerResult:
    """Forms jobs from all queued requests regardless of waiting time; each is sent to the workers only
    after the transaction that created it commits."""
    job_ids = service.trigger_batch_now(session, service.job_settings_from(runtime.settings))
    for job_id in job_ids:
        after_commit(session, lambda job_id=job_id: runtime.tasks.run_job(job_id))  # type: ignore[misc]
    return TriggerResult(job_ids=job_ids)
