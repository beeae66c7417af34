"""What the fault drills share: a real Celery worker process (with beat) on the test's database and its own
Redis database, and the invariants checked after a drill.  Each check returns the lines a drill prints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import (
    ActivationEvent,
    AdapterVersion,
    AuditEntry,
    Certificate,
    ErasureRequest,
    ErasureStatus,
    JobStatus,
    UnlearningJob,
    VersionStatus,
)
from core.ml.model import adapter_sha256
from core.services.certificates import verify_certificate
from core.settings import Settings
from tests.worker.conftest import worker_environment as worker_base_environment

# the worker imports the stand-in method ``test-nudge``, then runs as `celery worker -B` does
WORKER_MAIN = (
    "import tests.core.conftest; from worker.celery_app import celery_app; "
    "celery_app.worker_main(['worker', '-B', '-Q', 'unlearning,celery', '-c', '1', '--pool', 'solo', "
    "'-l', 'info'])"
)


def worker_environment(home: Path, db_url: str, redis_url: str) -> dict[str, str]:
    """The worker of tests/worker with short leases and polls, so that a fresh worker takes a killed
    worker's job up within seconds (production: the same code, longer times)."""
    return {
        **worker_base_environment(home, db_url, redis_url),
        "E2U_LEASE_SECONDS": "8",
        "E2U_BATCH_POLL_SECONDS": "2",
        "E2U_VISIBILITY_TIMEOUT_SECONDS": "10",  # Redis redelivers the killed worker's message
        "E2U_JOB_RETRY_DELAY_SECONDS": "1",
        "E2U_JOB_RETRY_MAX_DELAY_SECONDS": "2",
        "OMP_NUM_THREADS": "1",
    }


def start_worker(env: dict[str, str], log_file: Path, **extra: str) -> subprocess.Popen[bytes]:
    """The worker in a process group of its own (beat included), its output appended to ``log_file``."""
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER_MAIN],
            env={**env, **extra},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and everything it started (its beat): what a lost machine looks like."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        kill_group(process)


def wait_for_line(log_file: Path, text: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = log_file.read_text(errors="replace") if log_file.exists() else ""
        if text in content:
            return
        if process.poll() is not None:
            tail = content[-3000:]
            raise AssertionError(f"the worker exited ({process.returncode}) before {text!r}:\n{tail}")
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {seconds:.0f} s:\n{log_file.read_text(errors='replace')[-3000:]}")


def wait_for_job(session: Session, job_id: int, log_file: Path, seconds: float) -> UnlearningJob:
    """Poll the job row until it is finished."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        session.expire_all()
        job = session.get(UnlearningJob, job_id)
        assert job is not None
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished in {seconds:.0f} s:\n{log_file.read_text()[-4000:]}")


def check_exactly_once(
    session: Session, job_id: int, request_ids: list[str], parent_id: str, home: Path
) -> list[str]:
    """The invariants after a drill: the job succeeded once; each request completed once with one
    certificate, which verifies and names the active version (by the sha256 of the weights on disk) and
    the parent; one promotion; the parent's weights destroyed; no folder in the store that the registry
    does not list as live (no orphan, no temporary)."""
    session.expire_all()
    job = session.get(UnlearningJob, job_id)
    assert job is not None and job.status == JobStatus.SUCCEEDED, (job.status, job.failure_reason)
    jobs = list(session.scalars(select(UnlearningJob)))
    assert [j.id for j in jobs] == [job_id], "a second job appeared"
    entries = session.scalars(select(AuditEntry))
    audit = Counter((e.action, e.subject_id) for e in entries if e.action.startswith("erasure."))
    jwks = Settings(_env_file=None, environment="development", home=home).signing_keys.jwks()
    for request_id in request_ids:
        request = session.get(ErasureRequest, request_id)
        assert request is not None and request.status == ErasureStatus.COMPLETED, request
        assert request.user_id is None
        assert audit[("erasure.completed", request_id)] == 1, audit
        certificates = list(session.scalars(select(Certificate).where(Certificate.request_id == request_id)))
        assert len(certificates) == 1
        predicate = verify_certificate(certificates[0].document, jwks)["predicate"]
        assert predicate["child_adapter"]["id"] == job.child_version_id, predicate
        assert predicate["parent_adapter"]["id"] == parent_id, predicate
    promotions = list(session.scalars(select(ActivationEvent).where(ActivationEvent.kind == "promote")))
    assert [(e.version_id, e.job_id) for e in promotions] == [(job.child_version_id, job_id)], promotions
    child = session.get(AdapterVersion, job.child_version_id)
    assert child is not None and child.status == VersionStatus.ACTIVE
    assert adapter_sha256(Path(child.artifact_path)) == child.sha256 == predicate["child_adapter"]["sha256"]
    parent = session.get(AdapterVersion, parent_id)
    assert parent is not None and parent.status == VersionStatus.DESTROYED
    assert not Path(parent.artifact_path).exists()
    live = {
        Path(v.artifact_path).name for v in session.scalars(select(AdapterVersion)) if v.destroyed_at is None
    }
    on_disk = {p.name for p in (home / "adapters").iterdir()}
    orphans, missing = sorted(on_disk - live), sorted(live - on_disk)
    assert on_disk == live, f"orphaned in the store: {orphans}; missing: {missing}"
    return [
        f"job {job_id} succeeded once after {job.attempts} attempts; {len(request_ids)} request(s) completed"
        " once, one certificate each (verified, names the active version by its sha256)",
        f"one promotion ({parent_id} -> {job.child_version_id}); {parent_id} destroyed; store holds only"
        f" {sorted(live)}",
    ]
