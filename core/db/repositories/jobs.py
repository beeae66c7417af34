"""Unlearning jobs: creation, lease-fenced claiming, heartbeats and finishing, listing.

Every write to a job after its creation is a compare-and-set on its lease (``held_by``): the row must still
be running, leased by the writer, and its lease unexpired.  False (no row matched): the lease is lost."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from core.db.models import OPEN_JOB_STATUSES, JobPhaseTiming, JobRequest, JobStatus, UnlearningJob
from core.db.repositories import guarded_update


def get(session: Session, job_id: int) -> UnlearningJob | None:
    return session.get(UnlearningJob, job_id)


def create(session: Session, job: UnlearningJob, request_ids: Sequence[str]) -> UnlearningJob:
    session.add(job)
    session.flush()
    session.add_all([JobRequest(job_id=job.id, request_id=r) for r in request_ids])
    session.flush()
    return job


def request_ids(session: Session, job_id: int) -> list[str]:
    query = select(JobRequest.request_id).where(JobRequest.job_id == job_id).order_by(JobRequest.request_id)
    return list(session.scalars(query))


def list_jobs(
    session: Session, status: JobStatus | None = None, limit: int = 100, offset: int = 0
) -> list[UnlearningJob]:
    query = select(UnlearningJob).order_by(UnlearningJob.id.desc())
    if status is not None:
        query = query.where(UnlearningJob.status == status)
    return list(session.scalars(query.limit(limit).offset(offset)))


def try_lease(session: Session, job_id: int, owner: str, now: datetime, lease_seconds: float) -> bool:
    """Compare-and-set the lease: succeeds when the job is open and unleased, leased by ``owner``, or its
    lease has expired.  One UPDATE, so it is atomic on both databases."""
    statement = (
        update(UnlearningJob)
        .where(
            UnlearningJob.id == job_id,
            UnlearningJob.status.in_(sorted(OPEN_JOB_STATUSES)),
            or_(
                UnlearningJob.lease_owner.is_(None),
                UnlearningJob.lease_owner == owner,
                UnlearningJob.lease_expires_at < now,
            ),
        )
        .values(
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            status=JobStatus.RUNNING,
            attempts=UnlearningJob.attempts + 1,
        )
    )
    return guarded_update(session, statement, UnlearningJob, job_id)


def held_by(owner: str, now: datetime) -> ColumnElement[bool]:
    """The lease guard: the job is running, leased by ``owner``, and the lease has not run out at ``now``."""
    return and_(
        UnlearningJob.lease_owner == owner,
        UnlearningJob.status == JobStatus.RUNNING,
        UnlearningJob.lease_expires_at >= now,
    )


def heartbeat(
    session: Session, job_id: int, owner: str, now: datetime, lease_seconds: float, **values: Any
) -> bool:
    """Renew the lease (and set ``values``) only while ``owner`` still holds it unexpired.  False: the lease
    is lost.  On PostgreSQL the row stays locked until the transaction ends, so nobody can take the job
    over between a successful heartbeat and the commit that follows it."""
    statement = (
        update(UnlearningJob)
        .where(UnlearningJob.id == job_id, held_by(owner, now))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now, **values)
    )
    return guarded_update(session, statement, UnlearningJob, job_id)


def add_phase_timing(session: Session, job_id: int, phase: str, seconds: float, now: datetime) -> None:
    session.add(JobPhaseTiming(job_id=job_id, phase=phase, seconds=seconds, finished_at=now))
    session.flush()


def phase_duration_histogram(
    session: Session, bounds: Sequence[float]
) -> dict[str, tuple[list[int], int, float]]:
    """Per phase: how many timings are at most each bound (cumulative, as Prometheus buckets), their
    count and their sum of seconds; counted by the database, one row per phase."""
    buckets = [func.sum(case((JobPhaseTiming.seconds <= bound, 1), else_=0)) for bound in bounds]
    query = select(
        JobPhaseTiming.phase, func.count(), func.coalesce(func.sum(JobPhaseTiming.seconds), 0.0), *buckets
    ).group_by(JobPhaseTiming.phase)
    return {
        phase: ([int(n or 0) for n in counts], int(count), float(total))
        for phase, count, total, *counts in session.execute(query)
    }


def count_by_verdict_class(session: Session) -> dict[str, int]:
    """Jobs per verdict class of their candidate (jobs with none yet left out)."""
    query = (
        select(UnlearningJob.verdict_class, func.count())
        .where(UnlearningJob.verdict_class.is_not(None))
        .group_by(UnlearningJob.verdict_class)
    )
    return {str(verdict): int(count) for verdict, count in session.execute(query)}


def count_by_status(session: Session) -> dict[str, int]:
    query = select(UnlearningJob.status, func.count()).group_by(UnlearningJob.status)
    return {str(status): int(count) for status, count in session.execute(query)}


def finish(
    session: Session, job_id: int, owner: str, now: datetime, status: JobStatus, **values: Any
) -> bool:
    """End the job with ``status`` (and ``values``) and give up its lease, only while ``owner`` holds it.
    False: the lease is lost and nothing was written."""
    statement = (
        update(UnlearningJob)
        .where(UnlearningJob.id == job_id, held_by(owner, now))
        .values(status=status, finished_at=now, lease_owner=None, lease_expires_at=now, **values)
    )
    return guarded_update(session, statement, UnlearningJob, job_id)


def jobs_per_request(session: Session, request_ids: Sequence[str]) -> dict[str, int]:
    """How many jobs each request has been in (its attempts, the current job included)."""
    query = (
        select(JobRequest.request_id, func.count())
        .where(JobRequest.request_id.in_(list(request_ids)))
        .group_by(JobRequest.request_id)
    )
    return {str(request_id): int(count) for request_id, count in session.execute(query)}


def expired(session: Session, now: datetime) -> list[int]:
    """Open jobs nobody holds: running with an expired lease, or pending and never leased."""
    query = select(UnlearningJob.id).where(
        or_(
            and_(UnlearningJob.status == JobStatus.RUNNING, UnlearningJob.lease_expires_at < now),
            and_(UnlearningJob.status == JobStatus.PENDING, UnlearningJob.lease_owner.is_(None)),
        )
    )
    return list(session.scalars(query.order_by(UnlearningJob.id)))
