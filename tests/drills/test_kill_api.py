"""Drill: SIGKILL an API process in the middle of a hot swap (while it loads the version a job just
promoted), then start it again on the same port.  Real processes: uvicorn, a Celery worker with its beat,
PostgreSQL and Redis.

What must hold: until the restarted process serves the registry's active version it is not ready (no
answer, or /readyz 503); from then on it answers with that version; no answer ever comes from a version
destroyed before the answer was asked for; the job completes once; the erasure requests accepted before
the kill (one in the job, two while the swap hung) are all there, and a second job completes them.

The API process blocks in the swap through ``tests.drills.api_main`` (``E2U_DRILL_BLOCK_SWAP=1``).
Run: ``python -m pytest -m drill``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import AdapterVersion, ErasureRequest, ErasureStatus, JobStatus, UnlearningJob
from core.services.api_keys import create_api_key
from tests.drills import harness
from tests.drills.api_main import BLOCK_ENV, BLOCKED_LINE

POLL_SECONDS = 2.0


class Observer:
    """Asks an API process for readiness and a recommendation every few tenths of a second, from its
    start, and keeps every answer with the moment it was asked."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.readiness: list[tuple[datetime, int | None, dict[str, object]]] = []
        self.served: list[tuple[datetime, str]] = []  # (asked at, adapter_version of a 200)
        self.recommend_statuses: list[int | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Observer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            while not self._stop.is_set():
                asked = datetime.now(UTC)
                answer = harness.readiness(self.port)
                self.readiness.append((asked, *answer) if answer else (asked, None, {}))
                asked = datetime.now(UTC)
                try:
                    response = client.post(
                        "/v1/recommendations",
                        json={"user_id": "u5", "k": 3, "pool_size": 5},
                        headers={"X-API-Key": self.key},
                    )
                except httpx.HTTPError:
                    self.recommend_statuses.append(None)
                else:
                    self.recommend_statuses.append(response.status_code)
                    if response.status_code == 200:
                        self.served.append((asked, response.json()["adapter_version"]))
                self._stop.wait(0.3)

    def first_ready(self) -> int | None:
        return next((n for n, (_, status, _) in enumerate(self.readiness) if status == 200), None)


def _file(port: int, key: str, user: str, expected: int = 201) -> str:
    """File an erasure request for ``user`` (Idempotency-Key ``drill-<user>``); returns its id."""
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/erasure-requests",
        json={"user_id": user},
        headers={"X-API-Key": key, "Idempotency-Key": f"drill-{user}"},
        timeout=30,
    )
    assert response.status_code == expected, response.text
    return str(response.json()["id"])


def _file_unanswered(port: int, key: str, user: str, outcomes: dict[str, str]) -> threading.Thread:
    """File in a thread of its own: during the hung swap the answer never comes (the request commits, then
    its after-commit step waits for the model lock that the swap holds); the kill cuts the connection."""

    def call() -> None:
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/erasure-requests",
                json={"user_id": user},
                headers={"X-API-Key": key, "Idempotency-Key": f"drill-{user}"},
                timeout=None,
            )
            outcomes[user] = str(response.status_code)
        except httpx.HTTPError as error:
            outcomes[user] = type(error).__name__

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def _stored(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(ErasureRequest)) or 0)


def _trigger(port: int, key: str) -> list[int]:
    response = httpx.post(f"http://127.0.0.1:{port}/v1/admin/jobs/trigger", headers={"X-API-Key": key})
    assert response.status_code == 202, response.text
    return list(response.json()["job_ids"])


@pytest.mark.drill
@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_sigkill_of_the_api_during_a_hot_swap(
    session: Session, v1_id: str, db_url: str, redis_url: str, tmp_path: Path
) -> None:
    key = create_api_key(session, "drill", ["erase", "recommend", "admin"])
    session.commit()
    api_env = harness.api_environment(tmp_path, db_url, redis_url, POLL_SECONDS)
    port = harness.free_port()
    first_log, second_log, worker_log = (tmp_path / n for n in ("api-1.log", "api-2.log", "worker.log"))
    first = harness.start_api(api_env, port, first_log, **{BLOCK_ENV: "1"})
    worker = second = None
    try:
        harness.wait_until("serving v1", lambda: _ready_with(port, v1_id), 180, first_log)
        in_job = _file(port, key, "u3")
        [job_id] = _trigger(port, key)
        worker = harness.start_worker(harness.worker_environment(tmp_path, db_url, redis_url), worker_log)
        harness.wait_for_line(first_log, BLOCKED_LINE, first, 300)
        hung = harness.readiness(port)
        outcomes: dict[str, str] = {}
        callers = [_file_unanswered(port, key, user, outcomes) for user in ("u9", "u4")]
        harness.wait_until("both filings committed", lambda: _stored(session) == 3, 60, first_log)
        harness.kill_group(first)  # SIGKILL, mid-load
        for caller in callers:
            caller.join(30)
        killed_at = datetime.now(UTC)
        child_id = _child(session, job_id)
        second = harness.start_api(api_env, port, second_log)
        with Observer(port, key) as observer:
            came_up = harness.wait_until(
                "ready again", lambda: observer.first_ready() is not None, 180, second_log
            )
            # the callers cut off by the kill file again with the same Idempotency-Key: the requests that
            # committed before the kill come back (200), none twice
            during_swap = [_file(port, key, user, expected=200) for user in ("u9", "u4")]
            job = harness.wait_for_job(session, job_id, worker_log, 300)
            held = harness.check_exactly_once(session, job_id, [in_job], v1_id, tmp_path)
            # the requests filed during the swap: a second job (another hot swap) completes them
            [second_job] = _trigger(port, key)
            later = harness.wait_for_job(session, second_job, worker_log, 300)
            harness.wait_until(
                "serving the second child", lambda: _ready_with(port, later.child_version_id), 60
            )
            time.sleep(1)
    finally:
        harness.kill_group(first)
        for process in (second, worker):
            if process is not None:
                harness.stop(process)
    assert hung is not None and hung[0] == 503, hung  # serving v1 while the registry names the child
    assert (hung[1]["adapter_version"], hung[1]["registry_version"]) == (v1_id, child_id), hung
    assert job.status == later.status == JobStatus.SUCCEEDED, (job.failure_reason, later.failure_reason)
    assert _stored(session) == 3  # the filings sent again after the kill made no second request
    for request_id in during_swap:
        request = session.get(ErasureRequest, request_id)
        assert request is not None and request.status == ErasureStatus.COMPLETED, request
    ready_at = observer.first_ready()
    assert ready_at is not None
    before = observer.readiness[:ready_at]
    assert all(status in (None, 503) for _, status, _ in before), before
    assert all(body.get("ready") is False for _, status, body in before if status == 503), before
    assert observer.readiness[ready_at][2]["adapter_version"] == child_id, observer.readiness[ready_at]
    destroyed = {
        v.id: v.destroyed_at for v in session.scalars(select(AdapterVersion)) if v.destroyed_at is not None
    }
    late = [(at, v) for at, v in observer.served if v in destroyed and _aware(destroyed[v]) <= at]
    assert late == [], f"answers from versions destroyed before they were asked: {late}"
    versions = sorted({v for _, v in observer.served})
    assert observer.served and set(versions) <= {child_id, later.child_version_id}, versions
    refused = sum(1 for _, status, _ in before if status is None)
    print(
        f"\nDRILL kill-api: SIGKILL during the swap {v1_id} -> {child_id} (/readyz then: 503, serving"
        f" {v1_id}, registry {child_id}); restarted: ready after"
        f" {came_up:.1f} s ({refused} probes refused, {len(before) - refused} answered 503 before),"
        f" serving {child_id}"
    )
    print(
        f"  held: {len(observer.served)} recommendations after the restart, all from {versions}; none from a"
        f" destroyed version (destroyed: {sorted(destroyed)}); killed at {killed_at:%H:%M:%S}"
    )
    print(
        f"  held: 2 filings during the hung swap committed, their callers cut off by the kill ({outcomes});"
        f" filed again after the restart with their Idempotency-Key: the same 2 requests (200), completed by"
        f" job {second_job} (a second hot swap); {_stored(session)} requests in all"
    )
    for line in held:
        print(f"  held: {line}")


def _ready_with(port: int, version: str | None) -> bool:
    answer = harness.readiness(port)
    return answer is not None and answer[0] == 200 and answer[1]["adapter_version"] == version


def _child(session: Session, job_id: int) -> str:
    session.expire_all()
    job = session.get(UnlearningJob, job_id)
    assert job is not None and job.child_version_id is not None, job
    return job.child_version_id


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
