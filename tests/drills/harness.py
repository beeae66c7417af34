"""What the fault drills share: real Celery worker processes (one with the beat) and API processes on the
test's database and Redis, a Redis server and a PostgreSQL database of a drill's own (to restart and to cut
off without touching the machine's shared ones), and the invariants checked after a drill.  Each check
returns the lines a drill prints."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.engine import make_engine
from core.db.models import (
    ActivationEvent,
    AdapterVersion,
    AuditEntry,
    Certificate,
    ErasureRequest,
    ErasureStatus,
    JobStatus,
    UnlearningJob,
    Verdict,
    VersionStatus,
)
from core.ml.model import adapter_sha256
from core.services.certificates import verify_certificate
from core.settings import Settings
from tests.conftest import MODELS_DIR
from tests.worker.conftest import worker_environment as worker_base_environment


def worker_main(beat: bool = True) -> str:
    """The worker's command: it imports the stand-in methods ``test-nudge`` and ``drill-slow-nudge``, then
    runs as `celery worker [-B]` does (one beat per deployment: the other workers of a drill run without)."""
    flags = ["worker", *(["-B"] if beat else []), "-Q", "unlearning,celery", "-c", "1", "--pool", "solo"]
    return (
        "import tests.core.conftest, tests.drills.slow_method; from worker.celery_app import celery_app; "
        f"celery_app.worker_main({[*flags, '-l', 'info']!r})"
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


def start_worker(
    env: dict[str, str], log_file: Path, beat: bool = True, **extra: str
) -> subprocess.Popen[bytes]:
    """The worker in a process group of its own (beat included), its output appended to ``log_file``."""
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", worker_main(beat)],
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
    live = store_matches_registry(session, home)
    return [
        f"job {job_id} succeeded once after {job.attempts} attempts; {len(request_ids)} request(s) completed"
        " once, one certificate each (verified, names the active version by its sha256)",
        f"one promotion ({parent_id} -> {job.child_version_id}); {parent_id} destroyed; store holds only"
        f" {sorted(live)}",
    ]


def store_matches_registry(session: Session, home: Path) -> list[str]:
    """The folders in the store are exactly the versions the registry lists as not destroyed."""
    live = {
        Path(v.artifact_path).name for v in session.scalars(select(AdapterVersion)) if v.destroyed_at is None
    }
    on_disk = {p.name for p in (home / "adapters").iterdir()}
    orphans, missing = sorted(on_disk - live), sorted(live - on_disk)
    assert on_disk == live, f"orphaned in the store: {orphans}; missing: {missing}"
    return sorted(live)


def check_batches_once(session: Session, request_ids: list[str], home: Path) -> list[str]:
    """The invariants after several batches ran side by side: no job left open; every request completed
    once with one certificate that verifies and names a version that was active; each promotion by a
    different succeeded job of a different version, one after the other on the alias (counter + 1, the
    previous one its parent), and every succeeded job that had something to unlearn promoted exactly once;
    the last one active, its weights matching its sha256; every version it superseded destroyed; no folder
    the registry does not list."""
    session.expire_all()
    jobs = list(session.scalars(select(UnlearningJob).order_by(UnlearningJob.id)))
    statuses = Counter(str(j.status) for j in jobs)
    assert set(statuses) <= {JobStatus.SUCCEEDED, JobStatus.FAILED}, statuses
    promotions = list(
        session.scalars(
            select(ActivationEvent).where(ActivationEvent.kind == "promote").order_by(ActivationEvent.counter)
        )
    )
    promoted = [e.version_id for e in promotions]
    promoters = [e.job_id or 0 for e in promotions]
    assert len(set(promoted)) == len(promoted), f"a version promoted twice: {promoted}"
    assert len(set(promoters)) == len(promoters), f"a job promoted twice: {promoters}"
    # a succeeded job promotes its child, unless its batch had no training sample to unlearn (the parent
    # stays: verdict not_needed)
    succeeded = {j.id: j for j in jobs if j.status == JobStatus.SUCCEEDED and j.verdict != Verdict.NOT_NEEDED}
    assert sorted(promoters) == sorted(succeeded), (promoters, sorted(succeeded))
    for before, after in itertools.pairwise(promotions):
        assert (after.counter, after.previous_version_id) == (before.counter + 1, before.version_id), after
    for event in promotions:
        assert succeeded[event.job_id or 0].child_version_id == event.version_id, event
    served = set(session.scalars(select(ActivationEvent.version_id)))  # bootstrap, promotions
    entries = session.scalars(select(AuditEntry))
    audit = Counter((e.action, e.subject_id) for e in entries if e.action.startswith("erasure."))
    jwks = Settings(_env_file=None, environment="development", home=home).signing_keys.jwks()
    for request_id in request_ids:
        request = session.get(ErasureRequest, request_id)
        assert request is not None and request.status == ErasureStatus.COMPLETED, request
        assert request.user_id is None and audit[("erasure.completed", request_id)] == 1, audit
        certificates = list(session.scalars(select(Certificate).where(Certificate.request_id == request_id)))
        assert len(certificates) == 1
        predicate = verify_certificate(certificates[0].document, jwks)["predicate"]
        assert predicate["child_adapter"]["id"] in served, predicate
    last = session.get(AdapterVersion, promoted[-1])
    assert last is not None and last.status == VersionStatus.ACTIVE
    assert adapter_sha256(Path(last.artifact_path)) == last.sha256
    superseded = [
        v for v in session.scalars(select(AdapterVersion)) if v.id != last.id and v.destroyed_at is None
    ]
    assert all(v.status == VersionStatus.REJECTED for v in superseded), [(v.id, v.status) for v in superseded]
    live = store_matches_registry(session, home)
    return [
        f"{len(jobs)} jobs, each finished once ({dict(statuses)}); {len(request_ids)} requests completed"
        " once, one verified certificate each naming a version that was active",
        f"{len(promotions)} promotions, each by a different succeeded job of a different version, in"
        f" sequence on the alias: {' -> '.join(promoted)}; every superseded version destroyed; store holds"
        f" only {live}",
    ]


# ---------------------------------------------------------------------------------------------- waiting


def wait_until(
    what: str, predicate: Callable[[], bool], seconds: float, log_file: Path | None = None
) -> float:
    """Poll ``predicate`` until it holds; returns the seconds it took (AssertionError naming ``what`` and
    the log's tail after ``seconds``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > seconds:
            tail = log_file.read_text(errors="replace")[-3000:] if log_file and log_file.exists() else ""
            raise AssertionError(f"not {what} within {seconds:.0f} s\n{tail}")
        time.sleep(0.2)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------- API processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api_environment(home: Path, db_url: str, redis_url: str | None, poll_seconds: float) -> dict[str, str]:
    """An API process on the tiny model, the test's database and (when given) Redis for promotion messages
    and task sending."""
    models = home / "models"
    if not models.exists():
        models.symlink_to(MODELS_DIR)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("E2U_")},
        "E2U_HOME": str(home),
        "E2U_DATABASE_URL": db_url,
        "E2U_BASE_MODEL": "tiny",
        "E2U_ENVIRONMENT": "development",
        "E2U_ADAPTER_POLL_SECONDS": str(poll_seconds),
        "OMP_NUM_THREADS": "1",
    }
    if redis_url is not None:
        env |= {"E2U_REDIS_URL": redis_url, "E2U_BROKER_URL": redis_url, "E2U_RESULT_BACKEND": redis_url}
    return env


def start_api(env: dict[str, str], port: int, log_file: Path, **extra: str) -> subprocess.Popen[bytes]:
    """``tests.drills.api_main`` (uvicorn on the app factory) on ``port``, output appended to ``log_file``."""
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.drills.api_main", str(port)],
            env={**env, **extra},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def readiness(port: int) -> tuple[int, dict[str, object]] | None:
    """``GET /readyz``: (status, body), or None while nothing answers on the port."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.HTTPError:
        return None
    return response.status_code, response.json()


# ---------------------------------------------------------------------------------------------- own servers


class RedisServer:
    """A redis-server of the drill's own on a free port, without persistence (a restart loses every
    message, as a Redis without AOF does): the machine's shared Redis is never stopped."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--daemonize", "no", "--dir", str(self.workdir)]
        with (self.workdir / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_until("redis answering", self._answers, 20)

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextmanager
def own_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def terminate_backends(database: str) -> int:
    """``pg_terminate_backend`` on every connection to ``database`` (the drill's own) but this one."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def allow_connections(database: str, allowed: bool) -> None:
    """Open or close ``database`` to new connections: with the backends terminated, it is down for the
    drill's processes alone."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')


@contextmanager
def session_on(url: str) -> Iterator[Session]:
    """A session on its own engine, disposed afterwards (for checks after a drill dropped connections)."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()
