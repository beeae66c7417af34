"""Drills: the dependencies fail under a running service (real processes: uvicorn, a Celery worker with its
beat).  Each runs on a PostgreSQL database of its own (created and dropped here), so that terminating
backends reaches only the drill's connections, and the Redis drill on a redis-server of its own: the
machine's shared servers are never stopped.

1. Redis killed in the middle of a job and started again (empty: no persistence), with an erasure
   request filed and a batch triggered while it is away: the job in flight completes, the request filed
   during the outage is batched and completed once Redis is back, the API follows both promotions;
   nobody intervenes.
2. PostgreSQL connections dropped (``pg_terminate_backend``) while requests run, then the database
   closed to new connections for a while, then its connections dropped in the middle of a job: no answer
   is a 500; while the database is away /readyz says so (503, ``database: false``) and requests are
   refused with 503 + ``Retry-After``; a refused filing retried with its Idempotency-Key is accepted
   once; everything recovers by itself and every accepted request completes once.

Run: ``python -m pytest -m drill``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from core.services.api_keys import create_api_key
from tests.drills import harness
from tests.drills.slow_method import SECONDS_ENV, SLOW_METHOD, STEP_LINE

# never u1 or u8 (held out of training); and a few only: with most users erased no retain set is left
USERS = ["u0", "u2", "u3", "u4", "u5", "u6"]
POLL_SECONDS = 2.0


@pytest.fixture
def database(own_database: tuple[str, str]) -> tuple[str, str]:
    return own_database


@pytest.fixture
def db_url(own_database: tuple[str, str]) -> str:
    """The tests/core fixtures (session, seeded data, v1) on the drill's own database."""
    return own_database[1]


def worker_env(home: Path, db_url: str, redis_url: str) -> dict[str, str]:
    """Batches form at the beat's next tick, whatever their size; the method is the slow stand-in."""
    return harness.worker_environment(home, db_url, redis_url) | {
        "E2U_BATCH_SIZE": "50",
        "E2U_BATCH_MAX_WAIT_SECONDS": "0",
        "E2U_UNLEARNING_METHOD": SLOW_METHOD,
        SECONDS_ENV: "6",
    }


def api_env(home: Path, db_url: str, redis_url: str) -> dict[str, str]:
    """An API process with the worker's job settings: the admin trigger forms batches too."""
    worker = worker_env(home, db_url, redis_url)
    job_keys = ("E2U_UNLEARNING", "E2U_BATCH", "E2U_UTILITY", "E2U_MIA", "E2U_GOLD")
    shared = {k: v for k, v in worker.items() if k.startswith(job_keys)}
    return harness.api_environment(home, db_url, redis_url, POLL_SECONDS) | shared


class Api:
    """Calls to one API process; every answer's status is counted, and a 503 must carry Retry-After."""

    def __init__(self, port: int, key: str) -> None:
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"X-API-Key": key}
        )
        self.statuses: Counter[int] = Counter()
        self.without_retry_after = 0
        self.lock = threading.Lock()

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code == 503 and "retry-after" not in response.headers:
                self.without_retry_after += 1
        return response

    def file(self, user: str, retry_for: float = 60) -> tuple[str, int]:
        """File an erasure request for ``user`` with an Idempotency-Key, retrying 503s (after their
        Retry-After) until accepted; returns (its id, how many tries were refused)."""
        refused, deadline = 0, time.monotonic() + retry_for
        while True:
            response = self.call(
                "POST",
                "/v1/erasure-requests",
                json={"user_id": user},
                headers={"Idempotency-Key": f"drill-{user}"},
            )
            if response.status_code in (200, 201):
                return str(response.json()["id"]), refused
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, f"{user}: still refused after {retry_for:.0f} s"
            refused += 1
            time.sleep(float(response.headers["retry-after"]) / 4)  # quicker than told: more faults seen

    def status_of(self, request_id: str) -> str | None:
        response = self.call("GET", f"/v1/erasure-requests/{request_id}")
        return str(response.json()["status"]) if response.status_code == 200 else None


def _serving(port: int) -> str | None:
    answer = harness.readiness(port)
    return str(answer[1]["adapter_version"]) if answer and answer[0] == 200 else None


@pytest.mark.drill
def test_redis_killed_mid_job_and_restarted(
    session: Session, v1_id: str, database: tuple[str, str], tmp_path: Path
) -> None:
    db_url = database[1]
    key = create_api_key(session, "drill", ["erase", "admin"])
    session.commit()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with harness.own_redis(tmp_path) as redis:
        port = harness.free_port()
        api_process = harness.start_api(api_env(tmp_path, db_url, redis.url), port, api_log)
        worker = harness.start_worker(worker_env(tmp_path, db_url, redis.url), worker_log)
        try:
            harness.wait_until("the API serving v1", lambda: _serving(port) == v1_id, 180, api_log)
            api = Api(port, key)
            first, _ = api.file("u3")
            harness.wait_for_line(worker_log, STEP_LINE, worker, 300)  # the job is in its model work
            redis.kill()
            down = time.monotonic()
            during, _ = api.file("u9")  # filed while Redis is away
            started = time.monotonic()
            trigger = api.call("POST", "/v1/admin/jobs/trigger")
            trigger_seconds = time.monotonic() - started
            ready_during = harness.readiness(port)
            time.sleep(max(0.0, 8 - (time.monotonic() - down)))
            redis.start()  # the same port, empty
            outage = time.monotonic() - down
            recovered = harness.wait_until(
                "both requests completed",
                lambda: {api.status_of(first), api.status_of(during)} == {"completed"},
                600,
                worker_log,
            )
            held = harness.check_batches_once(session, [first, during], tmp_path)
            final = _serving_final(session)
            harness.wait_until(
                "the API serving the last version", lambda: _serving(port) == final, 60, api_log
            )
        finally:
            for process in (worker, api_process):
                harness.stop(process)
    assert trigger.status_code == 202, trigger.text
    assert ready_during is not None and ready_during[0] == 200, ready_during  # Redis is not needed to serve
    assert api.statuses.keys() <= {200, 201, 202}, api.statuses
    print(
        f"\nDRILL redis-restart: redis-server SIGKILLed in the middle of a job, started again (empty) after"
        f" {outage:.1f} s; meanwhile an erasure request was accepted (201), a trigger answered"
        f" {trigger.status_code} in {trigger_seconds:.1f} s, /readyz {ready_during[0]} (redis"
        f" {ready_during[1].get('redis')}); both requests completed {recovered:.0f} s after the restart,"
        f" no operator; the API serves {final}"
    )
    for line in held:
        print(f"  held: {line}")


def _serving_final(session: Session) -> str:
    from core.services import registry

    session.expire_all()
    active = registry.active_adapter(session)
    assert active is not None
    return active.version_id


@pytest.mark.drill
def test_postgres_connections_dropped_mid_request_and_mid_job(
    session: Session, v1_id: str, database: tuple[str, str], redis_url: str, tmp_path: Path
) -> None:
    name, db_url = database
    key = create_api_key(session, "drill", ["erase", "admin"])
    session.commit()
    session.close()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    port = harness.free_port()
    api_process = harness.start_api(api_env(tmp_path, db_url, redis_url), port, api_log)
    worker = None
    try:
        harness.wait_until("the API serving v1", lambda: _serving(port) == v1_id, 180, api_log)
        api = Api(port, key)

        # 1. connections dropped again and again while requests run
        stop, drops = threading.Event(), Counter[str]()

        def drop_connections() -> None:
            while not stop.is_set():
                drops["terminated"] += harness.terminate_backends(name)
                stop.wait(0.15)

        dropper = threading.Thread(target=drop_connections, daemon=True)
        dropper.start()
        accepted: dict[str, str] = {}
        refused_filings = 0
        try:
            for user in USERS[:4]:
                accepted[user], refused = api.file(user)
                refused_filings += refused
                for request_id in accepted.values():
                    api.status_of(request_id)
        finally:
            stop.set()
            dropper.join(10)
        mid_request = dict(api.statuses)

        # 2. the database closed to new connections, its connections dropped: away for the API
        harness.allow_connections(name, False)
        harness.terminate_backends(name)
        try:
            away = harness.readiness(port)
            refused_while_away = api.call(
                "POST",
                "/v1/erasure-requests",
                json={"user_id": USERS[4]},
                headers={"Idempotency-Key": f"drill-{USERS[4]}"},  # filed again below: accepted once
            )
        finally:
            harness.allow_connections(name, True)
        back_in = harness.wait_until("ready again", lambda: _serving(port) == v1_id, 60, api_log)
        for user in USERS[4:]:
            accepted[user], refused = api.file(user)
            refused_filings += refused

        # 3. a job (every request above) in its model work loses its connections, and the database is
        #    away for a few seconds
        worker = harness.start_worker(worker_env(tmp_path, db_url, redis_url), worker_log)
        harness.wait_for_line(worker_log, STEP_LINE, worker, 300)
        harness.allow_connections(name, False)
        mid_job = harness.terminate_backends(name)
        time.sleep(4)
        harness.allow_connections(name, True)
        recovered = harness.wait_until(
            "every accepted request completed",
            lambda: all(api.status_of(r) == "completed" for r in accepted.values()),
            600,
            worker_log,
        )
        with harness.session_on(db_url) as check:
            held = harness.check_batches_once(check, list(accepted.values()), tmp_path)
            final = _serving_final(check)
        harness.wait_until("the API serving the last version", lambda: _serving(port) == final, 60, api_log)
    finally:
        harness.allow_connections(name, True)
        for process in (worker, api_process):
            if process is not None:
                harness.stop(process)
    assert away is not None and away[0] == 503 and away[1]["database"] is False, away
    assert refused_while_away.status_code == 503 and "retry-after" in refused_while_away.headers
    assert 500 not in api.statuses and api.without_retry_after == 0, api.statuses
    assert len(set(accepted.values())) == len(USERS)
    print(
        f"\nDRILL postgres-drops: {drops['terminated']} backends terminated while 4 filings and their status"
        f" reads ran: answers {mid_request}, {refused_filings} filings refused (503 + Retry-After) then"
        " accepted on retry with their Idempotency-Key"
    )
    print(
        f"  database closed to new connections: /readyz {away[0]} (database={away[1]['database']}), a"
        f" filing {refused_while_away.status_code} + Retry-After"
        f" {refused_while_away.headers['retry-after']} s;"
        f" reopened: ready again in {back_in:.1f} s, no operator"
    )
    print(
        f"  mid-job: {mid_job} backends terminated and the database closed for 4 s during the model work;"
        f" every accepted request completed {recovered:.0f} s later; answers overall {dict(api.statuses)}"
    )
    for line in held:
        print(f"  held: {line}")
