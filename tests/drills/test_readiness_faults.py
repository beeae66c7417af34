"""Drill (default run, a few seconds): the dependencies go away under an API process and come back.

The app runs in-process on a PostgreSQL database of its own and a redis-server of its own.  Redis killed:
/readyz says ``redis: false`` and stays ready (the registry poll follows promotions without it), then
``redis: true`` once Redis is back.  The database closed to new connections with its connections
dropped: /readyz 503 with ``database: false``, a filing 503 + Retry-After; reopened: ready again without
anyone acting, and the refused filing, sent again with its Idempotency-Key, is accepted once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.main import create_app
from app.settings import ApiSettings
from core.db.models import ErasureRequest
from core.ml.model import LoadedModel
from core.ml.prompts import Catalog
from core.services.api_keys import create_api_key
from core.serving import ModelServer
from tests.drills import harness


@pytest.fixture
def db_url(own_database: tuple[str, str]) -> str:
    return own_database[1]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[harness.RedisServer]:
    with harness.own_redis(tmp_path) as server:
        yield server


def _until(client: TestClient, what: str, check: dict[str, object], seconds: float = 20) -> float:
    def holds() -> bool:
        answer = client.get("/readyz")
        return all(answer.json().get(k) == v for k, v in check.items()) and (
            answer.status_code == (200 if check.get("ready", True) else 503)
        )

    return harness.wait_until(what, holds, seconds)


@pytest.mark.postgres
def test_readiness_and_answers_follow_the_database_and_redis(
    session: Session,
    v1_id: str,
    own_database: tuple[str, str],
    redis: harness.RedisServer,
    tiny_model: LoadedModel,
    tmp_path: Path,
) -> None:
    name, url = own_database
    key = {"X-API-Key": create_api_key(session, "drill", ["erase"])}
    session.commit()
    settings = ApiSettings(
        environment="development",
        home=tmp_path,
        database_url=url,
        base_model="tiny",
        redis_url=redis.url,
        adapter_poll_seconds=0.5,
    )
    app = create_app(settings, model_server=ModelServer(tiny_model, Catalog(titles={}, profiles={})))
    with TestClient(app) as client:
        _until(client, "ready with Redis up", {"ready": True, "redis": True, "adapter_version": v1_id})

        redis.kill()
        noticed = _until(client, "Redis seen down, still ready", {"ready": True, "redis": False})
        redis.start()
        back = _until(client, "Redis seen up again", {"ready": True, "redis": True})

        harness.allow_connections(name, False)
        try:
            dropped = harness.terminate_backends(name)
            away = client.get("/readyz")
            refused = client.post(
                "/v1/erasure-requests", json={"user_id": "u3"}, headers={**key, "Idempotency-Key": "k-u3"}
            )
        finally:
            harness.allow_connections(name, True)
        started = time.monotonic()
        recovered = _until(client, "ready with the database back", {"ready": True, "database": True})
        accepted = client.post(
            "/v1/erasure-requests", json={"user_id": "u3"}, headers={**key, "Idempotency-Key": "k-u3"}
        )
        again = client.post(
            "/v1/erasure-requests", json={"user_id": "u3"}, headers={**key, "Idempotency-Key": "k-u3"}
        )
        seconds = time.monotonic() - started
    assert (away.status_code, away.json()["database"], away.json()["ready"]) == (503, False, False), (
        away.json()
    )
    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
    assert refused.json()["error"]["code"] == "database_unavailable", refused.json()
    assert (accepted.status_code, again.status_code) == (201, 200), (accepted.text, again.text)
    assert accepted.json()["id"] == again.json()["id"]
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(ErasureRequest)) == 1
    print(
        f"\nDRILL readiness: Redis killed -> /readyz redis=false in {noticed:.1f} s, still ready; back ->"
        f" redis=true in {back:.1f} s.  Database closed ({dropped} connections dropped) -> /readyz 503"
        f" database=false, a filing 503 + Retry-After {refused.headers['retry-after']} s; reopened -> ready"
        f" in {recovered:.1f} s, the filing retried with its Idempotency-Key accepted once ({seconds:.1f} s)"
    )
