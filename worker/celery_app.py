"""The Celery app: Redis in production, kombu's filesystem transport in the embedded default (no server).

Embedded: ``celery -A worker.celery_app worker -B -Q unlearning,celery -c 1`` (``-B`` runs the beat that
forms batches and re-enqueues jobs whose lease expired; one beat per deployment).  Production
(docker-compose.yml): a GPU worker on the ``unlearning`` queue (one job at a time), a light worker on the
``celery`` queue, and one ``celery beat`` process; ``python -m worker.health`` checks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from core.logs import configure_logging
from core.queue_contract import (
    DEFAULT_QUEUE,
    DELIVER_WEBHOOKS_TASK,
    FORM_BATCHES_TASK,
    LIGHT_TASK_HARD_SECONDS,
    LIGHT_TASK_SOFT_SECONDS,
    RUN_JOB_TASK,
    SERIALIZER,
    UNLEARNING_QUEUE,
    broker_transport_options,
)
from core.settings import LogSettings, Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Batch forming; webhook deliveries (retries fall due on this schedule) when a receiver is set."""
    schedule: dict[str, dict[str, Any]] = {
        "form-batches": {"task": FORM_BATCHES_TASK, "schedule": settings.batch_poll_seconds},
    }
    if settings.webhooks is not None:
        schedule["deliver-webhooks"] = {
            "task": DELIVER_WEBHOOKS_TASK,
            "schedule": settings.batch_poll_seconds,
        }
    return schedule


def beat_schedule_path(settings: Settings) -> Path:
    """The beat's schedule file (a shelve: the file name may gain a suffix); its folder exists."""
    folder = (settings.home / "celery").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "beat-schedule"


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    app = Celery("e2u", broker=settings.broker_url_resolved, backend=settings.result_backend_resolved)
    app.conf.update(
        task_acks_late=True,  # a job's message is acknowledged only when the task returns
        task_reject_on_worker_lost=True,  # ... and redelivered if the worker process dies
        worker_prefetch_multiplier=1,  # one long job at a time per process
        task_default_queue=DEFAULT_QUEUE,
        task_routes={
            RUN_JOB_TASK: {"queue": UNLEARNING_QUEUE},
            FORM_BATCHES_TASK: {"queue": DEFAULT_QUEUE},
            DELIVER_WEBHOOKS_TASK: {"queue": DEFAULT_QUEUE},
        },
        # a job's limit is the broker's visibility timeout: past it Redis would hand the job to a second
        # worker anyway (whose late writes the lease fences off)
        task_annotations={
            RUN_JOB_TASK: {"time_limit": settings.visibility_timeout_seconds},
            FORM_BATCHES_TASK: {
                "soft_time_limit": LIGHT_TASK_SOFT_SECONDS,
                "time_limit": LIGHT_TASK_HARD_SECONDS,
            },
            DELIVER_WEBHOOKS_TASK: {
                "soft_time_limit": LIGHT_TASK_SOFT_SECONDS,
                "time_limit": LIGHT_TASK_HARD_SECONDS,
            },
        },
        broker_transport_options=broker_transport_options(settings),
        result_expires=7 * 24 * 3600,
        task_serializer=SERIALIZER,
        accept_content=[SERIALIZER],
        broker_connection_retry_on_startup=True,
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(beat_schedule_path(settings)),
        beat_sync_every=1,  # the schedule file is written at each send: its age is the beat's health check
        imports=("worker.tasks",),
    )
    return app


def _logging(**_: Any) -> None:
    """Celery's own loggers and the tasks' write through ``core.logs`` (E2U_LOG_FORMAT: text or JSON, each
    line of a job naming it), in place of Celery's formats."""
    settings = LogSettings()
    configure_logging(settings.log_format, settings.log_level)


setup_logging.connect(_logging, weak=False)
celery_app = make_celery()
