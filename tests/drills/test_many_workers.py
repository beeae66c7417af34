"""Drills: several real Celery worker processes on one queue (PostgreSQL + Redis).

1. Two, then three workers (one runs the beat) with three batches in flight at once, and every job's
   message delivered twice: each batch runs once, each request completes once with one certificate, no
   version is promoted twice (the batches that lose the race for the alias are re-queued and run again).
2. A worker stopped (SIGSTOP) in the middle of a job for longer than its lease, then resumed (SIGCONT)
   after another worker took the job over: its late writes are refused (``lease_lost``), so there is no
   second child and no second promotion.  ``tests/core/services/test_fencing.py`` holds the same in one
   process; here it is two processes and a real stop.

Run: ``python -m pytest -m drill``.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import AdapterVersion, ErasureRequest, ErasureStatus, UnlearningJob
from core.queue_contract import RUN_JOB_TASK, UNLEARNING_QUEUE
from core.services import batching, erasures
from core.settings import Settings
from tests.drills import harness
from tests.drills.slow_method import SECONDS_ENV, SLOW_METHOD, STEP_LINE

USERS = ["u0", "u2", "u3", "u4", "u5", "u6"]  # never u1 or u8: held out of training


def queue_client(home: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # the Celery client builds from settings
    from worker.celery_app import make_celery

    return make_celery(Settings(_env_file=None, home=home, broker_url=redis_url, result_backend=redis_url))


def completed(session: Session, request_ids: list[str]) -> bool:
    session.expire_all()
    done = session.scalar(
        select(func.count())
        .select_from(ErasureRequest)
        .where(ErasureRequest.id.in_(request_ids), ErasureRequest.status == ErasureStatus.COMPLETED)
    )
    return done == len(request_ids)


@pytest.mark.drill
@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("workers", [2, 3])
def test_batches_in_flight_on_several_workers_run_exactly_once(
    workers: int,
    session: Session,
    v1_id: str,
    db_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = harness.worker_environment(tmp_path, db_url, redis_url) | {
        "E2U_BATCH_SIZE": "2",  # three batches of two
        "E2U_BATCH_MAX_WAIT_SECONDS": "0",  # re-queued requests form a new batch at the next beat
        "E2U_UNLEARNING_METHOD": SLOW_METHOD,  # one child per batch (its forget set seeds it)
        SECONDS_ENV: "1",
    }
    intake = erasures.IntakeConfig(salt="s")
    request_ids = [erasures.create_erasure_request(session, u, None, intake)[0].id for u in USERS]
    session.commit()
    Settings(_env_file=None, environment="development", home=tmp_path).signing_keys.active()  # one key
    logs = [tmp_path / f"worker-{n}.log" for n in range(workers)]
    processes = [harness.start_worker(env, log, beat=n == 0) for n, log in enumerate(logs)]
    try:
        client = queue_client(tmp_path, redis_url, monkeypatch)
        harness.wait_until("three batches formed", lambda: _jobs(session) >= 3, 120, logs[0])
        for job_id in _job_ids(session)[:3]:  # a second delivery of each batch's message: changes nothing
            client.send_task(RUN_JOB_TASK, args=[job_id], queue=UNLEARNING_QUEUE)
        seconds = harness.wait_until(
            "every request completed", lambda: completed(session, request_ids), 900, logs[0]
        )
        held = harness.check_batches_once(session, request_ids, tmp_path)
    finally:
        for process in processes:
            harness.stop(process)
    texts = [log.read_text(errors="replace") for log in logs]
    ran = [t.count(": succeeded") + t.count("promotion refused") for t in texts]
    skipped = sum(t.count(": skipped") for t in texts)
    print(
        f"\nDRILL {workers} workers, 3 batches in flight (each message sent twice): all requests completed"
        f" in {seconds:.0f} s; jobs that ran to an end per worker: {ran}; deliveries skipped: {skipped}"
    )
    for line in held:
        print(f"  held: {line}")


def _jobs(session: Session) -> int:
    return len(_job_ids(session))


def _job_ids(session: Session) -> list[int]:
    session.expire_all()
    return list(session.scalars(select(UnlearningJob.id).order_by(UnlearningJob.id)))


@pytest.mark.drill
@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_worker_stopped_past_its_lease_has_its_late_writes_refused(
    session: Session,
    v1_id: str,
    db_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = harness.worker_environment(tmp_path, db_url, redis_url)
    request_ids = [
        erasures.create_erasure_request(session, u, None, erasures.IntakeConfig(salt="s"))[0].id
        for u in ("u9", "u3")
    ]
    job_settings = batching.job_settings_from(
        Settings(_env_file=None, environment="development", unlearning_method=SLOW_METHOD)
    )
    [job_id] = batching.trigger_batch_now(session, job_settings)
    session.commit()
    Settings(_env_file=None, environment="development", home=tmp_path).signing_keys.active()
    slow_log, other_log = tmp_path / "slow.log", tmp_path / "other.log"
    # no beat on the worker to be stopped: the deployment's beat must keep running
    slow = harness.start_worker(env, slow_log, beat=False)
    other = None
    try:
        queue_client(tmp_path, redis_url, monkeypatch).send_task(
            RUN_JOB_TASK, args=[job_id], queue=UNLEARNING_QUEUE
        )
        harness.wait_for_line(slow_log, STEP_LINE, slow, 240)
        os.killpg(slow.pid, signal.SIGSTOP)
        stopped = _holder(session, job_id)
        slow_id = f"{socket.gethostname()}:{slow.pid}"
        assert stopped[0] == slow_id, stopped
        other = harness.start_worker(env, other_log, beat=True)
        taken = harness.wait_until(
            "the job taken over", lambda: _holder(session, job_id)[0] not in (None, slow_id), 240, other_log
        )
        os.killpg(slow.pid, signal.SIGCONT)  # the stopped worker resumes mid-job, its lease gone
        job = harness.wait_for_job(session, job_id, other_log, 300)
        harness.wait_for_line(slow_log, f"job {job_id}: lease_lost", slow, 120)
        held = harness.check_exactly_once(session, job_id, request_ids, v1_id, tmp_path)
        versions = list(session.scalars(select(AdapterVersion.id)))
    finally:
        harness.kill_group(slow)
        if other is not None:
            harness.stop(other)
    assert sorted(versions) == sorted([v1_id, job.child_version_id or ""]), versions  # no second child
    refusal = next(
        line
        for line in slow_log.read_text(errors="replace").splitlines()
        if f"job {job_id}: lease_lost" in line
    )
    print(
        f"\nDRILL stopped worker: SIGSTOP {slow_id} in its model work (job row phase={stopped[1]});"
        f" another worker took the job over {taken:.1f} s later; SIGCONT; the resumed worker ended with"
        f" '{refusal.split('] ', 1)[-1].strip()}'"
    )
    print(f"  held: no second child (versions: {len(versions)}: v1 and {job.child_version_id})")
    for line in held:
        print(f"  held: {line}")


def _holder(session: Session, job_id: int) -> tuple[str | None, str]:
    session.expire_all()
    job = session.get(UnlearningJob, job_id)
    assert job is not None
    return job.lease_owner, job.phase
