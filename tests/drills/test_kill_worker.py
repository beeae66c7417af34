"""Drill: SIGKILL the worker process at the end of each phase of a job (its work flushed, not committed),
then start a fresh worker: the job completes exactly once.  Real processes on PostgreSQL and Redis.

The worker to be killed runs with ``E2U_DRILL_PAUSE=<phase>`` (``core.services.pipeline.drill_pause``): it
logs that it paused and blocks there, so the kill lands in that phase every time.  The fresh worker gets
the job back two ways: Redis redelivers the killed worker's unacknowledged message (a short visibility
timeout here) and its beat re-sends the job once the lease has expired; whichever comes second is a
duplicate delivery that must change nothing.

Run: ``python -m pytest -m drill`` (about a minute per phase on two CPU cores).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.db.models import JobPhase, UnlearningJob
from core.ml.model import LoadedModel
from core.queue_contract import RUN_JOB_TASK, UNLEARNING_QUEUE
from core.services import batching, erasures
from core.settings import Settings
from tests.drills import harness

KILL_PHASES = [p for p in JobPhase if p not in (JobPhase.QUEUED, JobPhase.DONE)]


@pytest.mark.drill
@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("phase", KILL_PHASES, ids=str)
def test_sigkill_in_phase_then_a_fresh_worker_completes_the_job_once(
    phase: JobPhase,
    session: Session,
    v1_id: str,
    tiny_model: LoadedModel,
    db_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # the Celery client below builds from settings
    from worker.celery_app import make_celery

    env = harness.worker_environment(tmp_path, db_url, redis_url)
    requests = [
        erasures.create_erasure_request(session, user, None, erasures.IntakeConfig(salt="s"))[0].id
        for user in ("u9", "u3")
    ]
    job_settings = batching.job_settings_from(
        Settings(_env_file=None, environment="development", unlearning_method="test-nudge")
    )
    [job_id] = batching.trigger_batch_now(session, job_settings)
    session.commit()
    log = tmp_path / "worker.log"
    doomed = harness.start_worker(env, log, E2U_DRILL_PAUSE=str(phase))
    fresh = None
    try:
        queue = Settings(_env_file=None, home=tmp_path, broker_url=redis_url, result_backend=redis_url)
        client = make_celery(queue)
        client.send_task(RUN_JOB_TASK, args=[job_id], queue=UNLEARNING_QUEUE)
        harness.wait_for_line(log, f"drill: paused at the end of phase {phase}", doomed, 240)
        harness.kill_group(doomed)
        session.expire_all()
        job = session.get(UnlearningJob, job_id)
        assert job is not None
        killed_at = (job.phase, job.status, job.attempts)
        started = time.monotonic()
        fresh = harness.start_worker(env, log)
        job = harness.wait_for_job(session, job_id, log, 240)
        resumed_in = time.monotonic() - started
        time.sleep(12)  # past the visibility timeout: the killed worker's message is delivered again
        held = harness.check_exactly_once(session, job_id, requests, v1_id, tmp_path)
    finally:
        harness.kill_group(doomed)
        if fresh is not None:
            harness.stop(fresh)
    duplicates = log.read_text(errors="replace").count(f"job {job_id}: skipped")
    print(
        f"\nDRILL kill-worker phase={phase}: SIGKILL with the job row at phase={killed_at[0]}"
        f" status={killed_at[1]} attempts={killed_at[2]}; a fresh worker finished it in {resumed_in:.1f} s;"
        f" duplicate deliveries skipped: {duplicates}"
    )
    for line in held:
        print(f"  held: {line}")
