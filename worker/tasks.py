"""Thin tasks: take ids, open a session, call one service, commit, then enqueue what the commit created."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.data_keys import Keyring
from core.db.engine import checkpoint_wal, engine_for, session_factory
from core.db.models import utcnow
from core.events import promotion_publisher
from core.logs import job_context
from core.ml.model import LoadedModel, ModelConfig, load_base
from core.queue_contract import DELIVER_WEBHOOKS_TASK, FORM_BATCHES_TASK, RUN_JOB_TASK, UNLEARNING_QUEUE
from core.redaction import error_class, redacted_traceback
from core.services import batching, pipeline, suppression, webhooks
from core.settings import Settings
from worker.celery_app import celery_app

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class JobCrashed(RuntimeError):
    """What a job's unexpected error becomes at the queue: its class, never its text."""


def task(**options: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``celery_app.task(**options)`` with the task function's own signature kept for the type checker
    (Celery ships no type hints).  Tasks are sent by name (``send_task``), so nothing here needs the
    Task object's ``delay``."""
    decorator: Callable[[Callable[P, R]], Callable[P, R]] = celery_app.task(**options)
    return decorator


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()


@lru_cache(maxsize=1)
def keyring() -> Keyring:
    return settings().keyring()


def engine() -> Engine:
    """The process's database engine, with the pool settings (``E2U_DB_POOL_*``) as the API's."""
    current = settings()
    return engine_for(current.database_url_resolved, current.db_pool)


def sessions() -> sessionmaker[Session]:
    """Sessions of this worker process, carrying its keyring (the catalog seals and opens with it)."""
    return session_factory(engine(), keyring())


def ledger_replayed() -> None:
    """The worker is not ready before its database has applied the whole suppression ledger (a restored
    backup): replay it first, then empty SQLite's WAL of the deleted rows."""
    current = settings()
    with sessions()() as session:
        report = suppression.ensure_replayed(session, current.suppression_ledger, utcnow())
        session.commit()
    if report is not None:
        checkpoint_wal(engine())


@lru_cache(maxsize=1)
def base_model() -> LoadedModel:
    """Loaded once per worker process; jobs load adapters beside it and free them after."""
    current = settings()
    return load_base(
        ModelConfig(
            base=current.base_model, cache_dir=str(current.models_dir), prompt_file=current.prompt_file_name
        )
    )


def retry_policy(current: Settings) -> pipeline.RetryPolicy:
    """How jobs are tried again after infrastructure errors (``E2U_JOB_*`` settings)."""
    return pipeline.RetryPolicy(
        max_attempts=current.job_max_attempts,
        delay_seconds=current.job_retry_delay_seconds,
        max_delay_seconds=current.job_retry_max_delay_seconds,
    )


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def enqueue_jobs(job_ids: list[int]) -> None:
    """Send ``RUN_JOB_TASK`` for each job (call only after the commit that created the jobs)."""
    for job_id in job_ids:
        celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=UNLEARNING_QUEUE)


@task(name=FORM_BATCHES_TASK)
def form_batches() -> list[int]:
    """Delete the data of requests whose deadline is near (whatever happens to unlearning), form batches
    from queued requests and re-enqueue open jobs nobody holds."""
    current = settings()
    ledger_replayed()
    with sessions()() as session:
        margin = timedelta(hours=current.deadline_delete_margin_hours)
        deleted = pipeline.delete_data_due(
            session, margin, current.suppression_ledger, current.data_dir.resolve()
        )
        session.commit()
        if deleted:
            log.warning("deadline: data of %d open request(s) deleted ahead of unlearning", len(deleted))
        created = batching.form_batches(session, batching.job_settings_from(current))
        session.commit()
        orphaned = batching.jobs_needing_worker(session)
        session.commit()
    enqueue_jobs(sorted(set(created) | set(orphaned)))
    return created


@task(name=DELIVER_WEBHOOKS_TASK)
def deliver_webhooks() -> dict[str, int]:
    """Record an outbox row for each request that ended, then send those due (retries included)."""
    current = settings()
    config = current.webhooks
    if config is None:
        return {}
    with session_factory(current.database_url_resolved)() as session:
        recorded = webhooks.record_events(session, config)
        session.commit()
        report = webhooks.deliver_due(session, config, session.commit)
    return {
        "recorded": recorded,
        "delivered": len(report.delivered),
        "retrying": len(report.retrying),
        "failed": len(report.failed),
    }


@task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> dict[str, Any]:
    """Run or resume one unlearning job; a duplicate delivery finds the job leased or done and skips.
    The result (stored in the result backend) holds ids, a status and a reason: never user data (reasons
    name error classes, not their texts: ``core.redaction``).  Every line logged meanwhile names the job."""
    with job_context(job_id):
        return _run_job(job_id)


def _run_job(job_id: int) -> dict[str, Any]:
    current = settings()
    runtime = pipeline.PipelineRuntime(
        loaded=base_model(),
        adapters_dir=current.adapters_dir.resolve(),
        worker_id=worker_id(),
        signing_key=current.signing_keys.active(),
        ledger=current.suppression_ledger,
        lease_seconds=current.lease_seconds,
        publisher=promotion_publisher(current),
        prepared_data_dir=current.data_dir.resolve(),
        retry=retry_policy(current),
    )
    ledger_replayed()
    with sessions()() as session:
        try:
            outcome = pipeline.run_job(session, job_id, runtime, session.commit)
        except Exception as error:
            # Celery would log this error's text and store it in the result backend: keep both free of
            # what it may carry (user ids, SQL parameters); the lease runs out and the beat re-sends the job
            log.error("job %s crashed\n%s", job_id, redacted_traceback(error))
            raise JobCrashed(f"job {job_id}: {error_class(error)} (message withheld)") from None
        session.commit()
    if outcome.status in ("succeeded", "failed") and not checkpoint_wal(engine()):
        # a job that ends has deleted rows (purge, or a request closed holding none): their old pages
        # must not stay in SQLite's WAL; a reader held it open, the next job's checkpoint empties it
        log.warning("job %s: the SQLite WAL could not be emptied now", job_id)
    enqueue_jobs(outcome.follow_up_jobs)  # the exact fallback, created and committed by the job
    if outcome.status == "retry" and outcome.retry_in_seconds is not None:
        # the job holds its lease until then; the beat would also send it once the lease runs out
        celery_app.send_task(
            RUN_JOB_TASK, args=[job_id], queue=UNLEARNING_QUEUE, countdown=outcome.retry_in_seconds + 1
        )
    log.info("job %s: %s %s", job_id, outcome.status, outcome.reason or "")
    return {"job_id": outcome.job_id, "status": outcome.status, "reason": outcome.reason}
