"""The Celery app: Redis in production, kombu's filesystem transport in the embedded default (no server).

Run: ``celery -A worker.celery_app worker -B -Q unlearning,celery -c 1`` (``-B`` runs the beat that forms
batches and re-enqueues jobs whose lease expired; one beat per deployment).
"""

from __future__ import annotations

from celery import Celery

from core.queue_contract import (
    DEFAULT_QUEUE,
    FORM_BATCHES_TASK,
    RUN_JOB_TASK,
    SERIALIZER,
    UNLEARNING_QUEUE,
    broker_transport_options,
)
from core.settings import Settings


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    # the beat's schedule file: its folder must exist whatever the broker (only the embedded one made it)
    beat_schedule = (settings.home / "celery" / "beat-schedule").resolve()
    beat_schedule.parent.mkdir(parents=True, exist_ok=True)
    app = Celery("e2u", broker=settings.broker_url_resolved, backend=settings.result_backend_resolved)
    app.conf.update(
        task_acks_late=True,  # a job's message is acknowledged only when the task returns
        task_reject_on_worker_lost=True,  # ... and redelivered if the worker process dies
        worker_prefetch_multiplier=1,  # one long job at a time per process
        task_default_queue=DEFAULT_QUEUE,
        task_routes={RUN_JOB_TASK: {"queue": UNLEARNING_QUEUE}, FORM_BATCHES_TASK: {"queue": DEFAULT_QUEUE}},
        broker_transport_options=broker_transport_options(settings),
        result_expires=7 * 24 * 3600,
        task_serializer=SERIALIZER,
        accept_content=[SERIALIZER],
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "form-batches": {"task": FORM_BATCHES_TASK, "schedule": settings.batch_poll_seconds},
        },
        beat_schedule_filename=str(beat_schedule),
        imports=("worker.tasks",),
    )
    return app


celery_app = make_celery()
