"""Sending work to the Celery workers by task name (app never imports ``worker``).  The names and
queues are the contract in ``core.queue_contract``."""

from __future__ import annotations

import logging
from functools import cached_property

from celery import Celery

from core.queue_contract import RUN_JOB_TASK, SERIALIZER, UNLEARNING_QUEUE, broker_transport_options
from core.settings import Settings

log = logging.getLogger(__name__)


class TaskSender:
    """A producer-only Celery client for the configured broker (Redis or the embedded filesystem one)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def _celery(self) -> Celery:
        client = Celery("e2u-api", broker=self.settings.broker_url_resolved)
        client.conf.broker_transport_options = broker_transport_options(self.settings)
        client.conf.task_serializer = SERIALIZER
        return client

    def run_job(self, job_id: int) -> None:
        """Enqueue the unlearning job ``job_id``; call only after the commit that created it."""
        self._celery.send_task(RUN_JOB_TASK, args=[job_id], queue=UNLEARNING_QUEUE)
        log.info("enqueued unlearning job %s", job_id)
