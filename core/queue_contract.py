"""The queue contract between the edges: ``worker/`` defines the Celery tasks, ``app/`` sends them by name,
and both connect to the broker the same way.  Plain values only: core never imports Celery.

The embedded default broker is kombu's filesystem transport (no server): its folders live under the
service's home and are created here, so that the API and the worker agree on them.
"""

from __future__ import annotations

from typing import Any

from core.settings import Settings

RUN_JOB_TASK = "e2u.run_job"  # args: [job_id]; result: {job_id, status, reason}
FORM_BATCHES_TASK = "e2u.form_batches"  # no args; returns the job ids it created
DELIVER_WEBHOOKS_TASK = "e2u.deliver_webhooks"  # no args; the beat sends it when webhooks are configured
# Two queues, served by separate workers in production: a GPU job runs for minutes to hours, and the
# beat's batch forming (every E2U_BATCH_POLL_SECONDS) must not wait behind it
UNLEARNING_QUEUE = "unlearning"  # GPU workers, one job at a time, prefetch 1
DEFAULT_QUEUE = "celery"  # the light periodic tasks (the beat's batch forming, webhook deliveries)
# the light tasks' time limits: forming batches takes a few queries; one stuck past these is cut off, and
# the beat sends the next a poll later (the light worker's stop_grace_period lies above them)
LIGHT_TASK_SOFT_SECONDS = 60
LIGHT_TASK_HARD_SECONDS = 90
SERIALIZER = "json"  # task arguments and results are ids, statuses and reasons: never user data


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Kombu transport options for the configured broker (creates the embedded broker's folders)."""
    if not settings.broker_url_resolved.startswith("filesystem"):
        return {"visibility_timeout": settings.visibility_timeout_seconds}
    celery_home = settings.home / "celery"
    queue = (celery_home / "queue").resolve()
    processed = (celery_home / "processed").resolve()
    control = (celery_home / "control").resolve()  # kombu's default is ./control
    for folder in (queue, processed, control, celery_home / "results"):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "processed_folder": str(processed),
        "control_folder": str(control),
        "store_processed": False,
    }
