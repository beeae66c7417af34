"""Batching pending erasure requests into unlearning jobs, and finding jobs that need a worker.

State lives in the database, not in worker memory: a job row per batch, claimed requests locked with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL) or under SQLite's single write lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.db.engine import lock_for_claim
from core.db.models import ErasureStatus, JobPhase, JobStatus, UnlearningJob, utcnow
from core.db.repositories import adapters as adapter_repo
from core.db.repositories import audit as audit_repo
from core.db.repositories import erasures as erasure_repo
from core.db.repositories import jobs as job_repo
from core.ml.evidence import EvidenceConfig
from core.ml.unlearning.retrain import Retrain
from core.services import registry
from core.services.errors import Conflict, NotFound, parse_status
from core.services.job_config import JobConfig, stored_evidence_config


@dataclass(frozen=True)
class JobSettings:
    """Everything a job needs to be reproduced; stored on the job row when the batch forms."""

    batch_size: int = 8
    batch_max_wait_seconds: float = 300.0
    max_retries: int = 3
    max_attempts: int = 8  # jobs a request may go through (promotion conflicts included)
    method: str = "e2urec"
    method_config: dict[str, Any] = field(default_factory=dict)
    thresholds: EvidenceConfig = field(default_factory=EvidenceConfig)  # the verifier's statistics
    valid_samples: int = 256
    max_verify_samples: int = 512
    reference_users: int = 40
    reference_samples: int = 20
    seed: int = 0
    exact_fallback: bool = True
    fallback_method_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (
            self.batch_size < 1
            or self.max_retries < 0
            or self.max_attempts < 1
            or self.batch_max_wait_seconds < 0
        ):
            raise ValueError(
                "batch_size >= 1, max_retries >= 0, max_attempts >= 1, batch_max_wait_seconds >= 0 required"
            )

    def job_config(self, attempt_seed: int) -> JobConfig:
        """The configuration of a new job; ``attempt_seed`` (the batch's retries so far) varies the
        method's seed from one attempt to the next unless the method config fixes it."""
        method_config = dict(self.method_config)
        method_config.setdefault("seed", self.seed + attempt_seed)
        return JobConfig(
            method=self.method,
            method_config=method_config,
            valid_samples=self.valid_samples,
            max_verify_samples=self.max_verify_samples,
            reference_users=self.reference_users,
            reference_samples=self.reference_samples,
            max_retries=self.max_retries,
            max_attempts=self.max_attempts,
            seed=self.seed,
            exact_fallback=self.exact_fallback,
            fallback_method_config=dict(self.fallback_method_config),
        )


FALLBACK_METHOD = Retrain.name


def _new_job(
    session: Session,
    request_ids: list[str],
    config: JobConfig,
    thresholds: EvidenceConfig,
    now: datetime,
    expected: frozenset[ErasureStatus] = frozenset({ErasureStatus.QUEUED}),
) -> UnlearningJob:
    """A pending job for ``request_ids``, which must all still be in one of the ``expected`` statuses
    (Conflict otherwise: another caller claimed one first; the caller rolls back)."""
    alias = adapter_repo.alias(session)
    job = UnlearningJob(
        status=JobStatus.PENDING,
        phase=JobPhase.QUEUED,
        progress=0.0,
        created_at=now,
        attempts=0,
        config=config.to_dict(),
        thresholds=thresholds.to_dict(),
        metrics={},
        parent_version_id=alias.version_id if alias else None,
        expected_alias_counter=alias.counter if alias else None,
    )
    job_repo.create(session, job, request_ids)
    claimed = erasure_repo.transition(
        session, request_ids, expected, ErasureStatus.UNLEARNING, now, job_id=job.id, started_at=now
    )
    if claimed != len(request_ids):
        raise Conflict(f"{len(request_ids) - claimed} of the requests were taken by another caller")
    audit_repo.record(
        session, now, "batcher", "job.created", "unlearning_job", str(job.id), requests=request_ids
    )
    return job


def form_batches(
    session: Session, settings: JobSettings, now: datetime | None = None, force: bool = False
) -> list[int]:
    """Admit ``received`` requests to the queue, then claim queued requests into jobs: full batches of
    ``batch_size``, plus the rest when the oldest has waited ``batch_max_wait_seconds`` in the queue (or
    ``force``).  Returns the new job ids; the caller commits, then enqueues
    ``core.queue_contract.RUN_JOB_TASK`` for each.
    Call at the start of a transaction."""
    when = now or utcnow()
    lock_for_claim(session)
    erasure_repo.admit_received(session, when)
    queued = erasure_repo.queued_for_claim(session)
    job_ids = []
    while queued:
        batch = queued[: settings.batch_size]
        oldest = min(r.queued_at or r.created_at for r in batch)
        ripe = when - oldest >= timedelta(seconds=settings.batch_max_wait_seconds)
        if len(batch) < settings.batch_size and not (ripe or force):
            break
        config = settings.job_config(attempt_seed=max(r.retry_count for r in batch))
        job_ids.append(_new_job(session, [r.id for r in batch], config, settings.thresholds, when).id)
        queued = queued[settings.batch_size :]
    return job_ids


def fallback_recipe(session: Session, version_id: str | None) -> dict[str, Any] | None:
    """The training recipe (``TrainConfig`` JSON) of the first version in ``version_id``'s lineage: the
    exact fallback retrains with it so that the new adapter has the same LoRA shape."""
    if version_id is None or adapter_repo.get(session, version_id) is None:
        return None
    root = adapter_repo.get(session, registry.lineage(session, version_id)[-1])
    recipe = root.config.get("train") if root is not None else None
    return dict(recipe) if isinstance(recipe, dict) else None


def create_fallback_job(
    session: Session, request_ids: list[str], failed_job: UnlearningJob, now: datetime | None = None
) -> int:
    """A job that retrains an adapter from the base (method ``retrain``) on every training sample not under
    a live or completed erasure, for requests whose batch used up its retries.  Same gates, same fenced
    promotion; it never falls back again.  Returns the job id: the caller commits, then enqueues it."""
    when = now or utcnow()
    failed = JobConfig.from_dict(failed_job.config)
    method_config = dict(failed.fallback_method_config)
    if "train" not in method_config:
        recipe = fallback_recipe(session, failed_job.parent_version_id)
        if recipe is not None:
            method_config["train"] = recipe
    config = replace(
        failed,
        method=FALLBACK_METHOD,
        method_config=method_config,
        fallback=True,
        fallback_of_job=failed_job.id,
    )
    thresholds = stored_evidence_config(failed_job.thresholds)
    requeued = frozenset({ErasureStatus.QUEUED, ErasureStatus.NOT_UNLEARNED})
    job = _new_job(session, request_ids, config, thresholds, when, requeued)
    audit_repo.record(
        session, when, f"job:{failed_job.id}", "job.exact_fallback", "unlearning_job", str(job.id)
    )
    return job.id


def trigger_batch_now(session: Session, settings: JobSettings, now: datetime | None = None) -> list[int]:
    """Admin "run now": batch every queued request regardless of waiting time.  Returns new job ids."""
    return form_batches(session, settings, now, force=True)


def jobs_needing_worker(session: Session, now: datetime | None = None) -> list[int]:
    """Open jobs that no live worker holds (expired lease or never picked up): enqueue them again.
    A job's own lease check makes a duplicate delivery harmless."""
    return job_repo.expired(session, now or utcnow())


def get_job(session: Session, job_id: int) -> UnlearningJob:
    job = job_repo.get(session, job_id)
    if job is None:
        raise NotFound(f"no unlearning job {job_id}")
    return job


def job_request_ids(session: Session, job_id: int) -> list[str]:
    """The erasure requests of a job's batch."""
    get_job(session, job_id)
    return job_repo.request_ids(session, job_id)


def list_jobs(
    session: Session, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[UnlearningJob]:
    """Newest first, optionally only those with ``status`` (InvalidInput unless it is a ``JobStatus``)."""
    return job_repo.list_jobs(session, parse_status(JobStatus, status), limit, offset)


def job_settings_from(settings: Any) -> JobSettings:
    """``JobSettings`` from ``core.settings.Settings`` (for the edges)."""
    return JobSettings(
        batch_size=settings.batch_size,
        batch_max_wait_seconds=settings.batch_max_wait_seconds,
        max_retries=settings.max_retries,
        method=settings.unlearning_method,
        method_config=dict(settings.unlearning_config),
        thresholds=EvidenceConfig(
            alpha=settings.verify_alpha,
            power=settings.verify_power,
            effect_of_interest=settings.verify_effect_of_interest,
            utility_margin=settings.utility_margin,
        ),
        valid_samples=settings.verify_valid_samples,
        max_verify_samples=settings.verify_max_samples,
        reference_users=settings.verify_reference_users,
        reference_samples=settings.verify_reference_samples,
        exact_fallback=settings.exact_fallback,
        fallback_method_config=dict(settings.exact_fallback_config),
    )
