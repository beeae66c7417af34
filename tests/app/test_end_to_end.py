"""End to end: the API (in process, real settings) and a real Celery worker process (with beat), on the tiny
(random-init) model with a tiny adapter v1 trained in seconds.  Once with SQLite and kombu's filesystem
broker (the embedded default), once with the machine's PostgreSQL (a fresh schema) and Redis (broker,
results and the promotion pub/sub, with the registry poll slowed down so that pub/sub must deliver).

Flow: a gate that cannot pass leaves v1 active and the request queued again; the next job (real E2URec)
completes both requests, a new version is active and the API answers with it, the users' rows are gone
from every table, v1's files are gone (and freed from the API's memory), the certificate verifies, and a
rollback to v1 is refused.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app as cli
from app.launcher import initialise, start_worker, stop_process, wait_for_worker
from app.main import create_app
from app.settings import ApiSettings
from core.data_keys import create_kek_file
from core.db.engine import KEYRING_INFO, make_engine
from core.db.models import Base
from core.ml.data import SampleConfig, prepare, save_prepared
from core.ml.model import TINY, LoraSpec, ModelConfig
from core.ml.training import TrainConfig
from core.ml.workflows import train_first_adapter
from core.services.api_keys import create_api_key
from core.services.certificates import verify_certificate
from core.signing import SigningKey
from tests.conftest import MODELS_DIR, synthetic_dataset

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_DB = 12  # tests/worker uses 11


@dataclass
class Stack:
    client: TestClient
    app: Any
    sessions: sessionmaker[Session]
    settings: ApiSettings
    headers: dict[str, str]
    v1: str
    worker_log: Path


def _database(backend: str, home: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{home / 'e2u.sqlite'}"
        return
    schema = f"e2u_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _environment(backend: str, home: Path, url: str) -> dict[str, str]:
    env = {
        "E2U_HOME": str(home),
        "E2U_DATABASE_URL": url,
        "E2U_BASE_MODEL": TINY,
        "E2U_HISTORY_LEN": "3",
        # the production shape: a real signing key file and salt (the API and the worker refuse to start
        # without them)
        "E2U_ENVIRONMENT": "production",
        "E2U_SIGNING_KEY_FILE": str(home / "secrets" / "signing-key.pem"),
        "E2U_DATA_KEK_FILE": str(home / "secrets" / "data-kek"),
        "E2U_CERTIFICATE_SALT": "e2e-salt",
        # the beat runs (orphaned jobs) but never forms a batch by itself: the test triggers each job
        "E2U_BATCH_SIZE": "1000",
        "E2U_BATCH_MAX_WAIT_SECONDS": "86400",
        "E2U_BATCH_POLL_SECONDS": "2",
        "E2U_UTILITY_MARGIN": "1.0",  # the model is untrained: gates that any sane child passes
        "E2U_MIA_MARGIN": "0.5",
        "E2U_GOLD_MARGIN": "1.0",
        "E2U_UNLEARNING_METHOD": "e2urec",
        # a registry poll far longer than the test: only the promotion's announcement can move the API
        # in time (embedded: the stamp file under home; PostgreSQL + Redis: the pub/sub message), and the
        # job must wait for the API's switch before it reports the requests completed
        "E2U_ADAPTER_POLL_SECONDS": "600",
    }
    if backend == "postgres":
        redis = f"redis://127.0.0.1:6379/{REDIS_DB}"
        env |= {"E2U_BROKER_URL": redis, "E2U_RESULT_BACKEND": redis, "E2U_REDIS_URL": redis}
    return env


def _prepare_data(settings: ApiSettings) -> Callable[[], None]:
    return lambda: (
        save_prepared(prepare(synthetic_dataset(), SampleConfig(history_len=3)), settings.data_dir) and None
    )


def _train_v1(settings: ApiSettings) -> Callable[[], None]:
    from core.ml.data import load_prepared

    def train() -> None:
        config = TrainConfig(
            lora=LoraSpec(r=2, alpha=4), max_steps=6, batch_size=8, eval_every=6, valid_samples=8
        )
        model = ModelConfig(base=TINY, cache_dir=str(settings.models_dir), device="cpu")
        train_first_adapter(
            model, load_prepared(settings.data_dir), config, settings.adapters_dir / "v1", False
        )

    return train


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(MODELS_DIR)  # the tiny model is built once per machine
    (home / "secrets").mkdir()
    (home / "secrets" / "signing-key.pem").write_bytes(SigningKey.generate().to_pem())
    create_kek_file(home / "secrets" / "data-kek")
    for url in _database(request.param, home):
        for name, value in _environment(request.param, home, url).items():
            monkeypatch.setenv(name, value)
        settings = ApiSettings(_env_file=None)  # type: ignore[call-arg]
        report = initialise(settings, _prepare_data(settings), _train_v1(settings), create_dev_key=False)
        assert report.active_version is not None and report.imported_interactions > 0
        engine = make_engine(url)
        sessions = sessionmaker(bind=engine, expire_on_commit=False, info={KEYRING_INFO: settings.keyring()})
        with sessions() as session:
            key = create_api_key(session, "e2e", ["admin", "erase", "recommend"])
            session.commit()
        worker_log = home / "logs" / "worker.log"
        worker = start_worker(settings, worker_log)
        try:
            wait_for_worker(worker, worker_log, seconds=120)
            app = create_app(settings)
            with TestClient(app) as client:
                yield Stack(
                    client, app, sessions, settings, {"X-API-Key": key}, report.active_version, worker_log
                )
        finally:
            stop_process(worker)
            engine.dispose()


def _wait(what: str, check: Callable[[], Any], log: Path, seconds: float = 150.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; worker log tail:\n{tail}")


def _rows_naming(sessions: sessionmaker[Session], user_id: str) -> list[str]:
    """Every (table, row) that still holds the raw user id, in any column (JSON included)."""
    found = []
    with sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                for value in row:
                    text = json.dumps(value) if isinstance(value, dict | list) else str(value)
                    if value == user_id or f'"{user_id}"' in text:
                        found.append(f"{table.name}: {tuple(row)}")
                        break
    return found


def _recommend(stack: Stack, user_id: str) -> Any:
    return stack.client.post("/v1/recommendations", json={"user_id": user_id, "k": 3}, headers=stack.headers)


def test_erasure_end_to_end(stack: Stack, tmp_path: Path) -> None:
    client, headers, runtime = stack.client, stack.headers, stack.app.state.runtime
    assert _recommend(stack, "u1").json()["adapter_version"] == stack.v1

    # 1. a verification that cannot pass: v1 stays active and the request is queued again.  Forced
    # through an explicit configuration (a utility set of one sample has one label, so no AUC and no
    # evidence that utility held): the real thresholds fail it, with the reason "cannot verify"
    first = client.post("/v1/erasure-requests", json={"user_id": "u3"}, headers=headers).json()
    runtime.settings = stack.settings.model_copy(update={"verify_valid_samples": 1})
    [failing_job] = client.post("/v1/admin/jobs/trigger", headers=headers).json()["job_ids"]
    runtime.settings = stack.settings
    job = _wait(
        "the failing job",
        lambda: (
            (j := client.get(f"/v1/admin/jobs/{failing_job}", headers=headers).json())["status"] == "failed"
            and j
        ),
        stack.worker_log,
    )
    assert job["verdict"] == "failed" and "verification failed: cannot verify" in job["failure_reason"]
    request = client.get(f"/v1/erasure-requests/{first['id']}", headers=headers).json()
    assert request["status"] == "queued" and request["retry_count"] == 1
    adapters = client.get("/v1/admin/adapters", headers=headers).json()
    assert adapters["active_version_id"] == stack.v1
    assert _recommend(stack, "u1").json()["adapter_version"] == stack.v1

    # 2. the next job (real E2URec, passing gates) completes both requests
    second = client.post(
        "/v1/erasure-requests", json={"user_id": "u2"}, headers=headers | {"Idempotency-Key": "e2e-u2"}
    ).json()
    [job_id] = client.post("/v1/admin/jobs/trigger", headers=headers).json()["job_ids"]
    done = _wait(
        "the erasure to complete",
        lambda: (
            (r := client.get(f"/v1/erasure-requests/{second['id']}", headers=headers).json())["status"]
            in ("completed", "not_unlearned")
            and r
        ),
        stack.worker_log,
    )
    # the moment a request reads completed, the API answers with the new adapter (no poll to wait for)
    answered = _recommend(stack, "u1").json()["adapter_version"]
    job = client.get(f"/v1/admin/jobs/{job_id}", headers=headers).json()
    assert done["status"] == "completed", (done, job)
    assert answered == job["child_version_id"] != stack.v1
    assert client.get(f"/v1/erasure-requests/{first['id']}", headers=headers).json()["status"] == "completed"
    assert job["status"] == "succeeded" and job["verdict"] == "passed" and job["metrics"]

    # a new version is active, the API serves it, and v1 is gone from memory and disk
    adapters = client.get("/v1/admin/adapters", headers=headers).json()
    new = adapters["active_version_id"]
    assert new != stack.v1 and new == job["child_version_id"]
    child = next(v for v in adapters["versions"] if v["id"] == new)
    assert child["lineage"] == [new, stack.v1] and child["metrics"]
    assert client.get("/readyz").json()["adapter_version"] == new
    assert runtime.model_server.loaded_versions() == [new] and stack.v1 in runtime.model_server.freed
    old = next(v for v in adapters["versions"] if v["id"] == stack.v1)
    assert old["status"] == "destroyed" and old["destroyed_at"]
    assert not (stack.settings.adapters_dir / "v1").exists()

    # the users' data is gone from every table and from the API
    assert _rows_naming(stack.sessions, "u1")  # the scan finds a user who was not erased
    assert _rows_naming(stack.sessions, "u2") == [] and _rows_naming(stack.sessions, "u3") == []
    assert _recommend(stack, "u2").status_code == 404

    # the certificate verifies against the published keys (fetched with no API key), in core and through
    # `e2u certificate verify --jwks`; a tampered one does not
    certificate = client.get(f"/v1/erasure-requests/{second['id']}/certificate", headers=headers).json()
    published = client.get("/.well-known/jwks.json")
    assert published.status_code == 200 and "public" in published.headers["cache-control"]
    signed = verify_certificate(certificate, published.json())
    assert signed["predicate"]["request_id"] == second["id"]
    assert signed["subject"][0]["name"] == f"adapter:{new}"
    # it records when the serving process (this API) confirmed the switch, before the old weights went
    serving = signed["predicate"]["serving"]
    assert serving["version_id"] == new and serving["missing"] == []
    switched = serving["confirmed"][runtime.process_id]
    destroyed = signed["predicate"]["timestamps"]["old_weights_destroyed_at"]
    assert serving["all_switched_at"] == switched
    assert datetime.fromisoformat(switched) <= datetime.fromisoformat(destroyed)
    path, keys = tmp_path / "certificate.json", tmp_path / "jwks.json"
    path.write_text(json.dumps(certificate))
    keys.write_text(published.text)
    runner = CliRunner()
    result = runner.invoke(cli, ["certificate", "verify", str(path), "--jwks", str(keys)])
    assert result.exit_code == 0, result.output
    assert f"request {second['id']}" in result.output
    forged = json.loads(base64.b64decode(certificate["payload"]))
    forged["predicate"]["request_id"] = "someone-else"
    forged_payload = base64.b64encode(json.dumps(forged).encode()).decode()
    path.write_text(json.dumps(certificate | {"payload": forged_payload}))
    tampered = runner.invoke(cli, ["certificate", "verify", str(path), "--jwks", str(keys)])
    assert tampered.exit_code == 1 and f"INVALID: {path}" in tampered.output, tampered.output

    # rolling back to v1 would serve erased data again: refused
    refused = client.post(f"/v1/admin/adapters/{stack.v1}/rollback", headers=headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "predates_erasure"
    assert client.get("/v1/admin/adapters", headers=headers).json()["active_version_id"] == new
    if stack.settings.redis_url:
        assert runtime._redis is not None and runtime._redis.received >= 1


SUBJECT = "subject-7f3a9c"  # a user of the API's own (long enough to search files' bytes for)


def _texts_naming(texts: list[str], *user_ids: str) -> list[str]:
    pattern = re.compile("|".join(rf"\b{re.escape(u)}\b" for u in user_ids))
    return [text for text in texts if pattern.search(text)]


def _result_backend_entries(settings: ApiSettings) -> list[str]:
    """Every value the queue's result backend holds (Redis, or the embedded file backend under home)."""
    if settings.result_backend.startswith("redis://"):
        client = redis.Redis.from_url(settings.result_backend)
        return [str(client.get(key)) for key in client.scan_iter("celery-task-meta-*")]
    folder = settings.home / "celery" / "results"
    return [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]


def test_erasure_leaves_no_trace(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """After completion no table row, log line (API access and app logs, the worker's log), result-backend
    entry or file under the data directory holds the users' ids or readable ratings; the certificate holds
    only the salted hash."""
    client, headers = stack.client, stack.headers
    caplog.set_level(logging.DEBUG)
    ratings = {"ratings": [{"item_id": f"i{n}", "rating": 5, "timestamp": 2_000_000 + n} for n in range(3)]}
    assert client.post(f"/v1/users/{SUBJECT}/ratings", json=ratings, headers=headers).status_code == 201
    assert _recommend(stack, SUBJECT).status_code == 200  # its prompts in the API's cache
    # a cancelled request, then the ones carried out: the subject (ratings never trained on) and u4
    cancelled = client.post("/v1/erasure-requests", json={"user_id": SUBJECT}, headers=headers).json()
    assert client.post(f"/v1/erasure-requests/{cancelled['id']}/cancel", headers=headers).status_code == 200
    filed = [
        client.post("/v1/erasure-requests", json={"user_id": user}, headers=headers).json()
        for user in (SUBJECT, "u4")
    ]
    [job_id] = client.post("/v1/admin/jobs/trigger", headers=headers).json()["job_ids"]
    for request in filed:
        done = _wait(
            "the erasure to complete",
            lambda r=request: (
                (s := client.get(f"/v1/erasure-requests/{r['id']}", headers=headers).json())["status"]
                in ("completed", "not_unlearned")
                and s
            ),
            stack.worker_log,
        )
        assert done["status"] == "completed", (
            done,
            client.get(f"/v1/admin/jobs/{job_id}", headers=headers).json(),
        )
    time.sleep(1.0)  # the worker checkpoints the WAL and stores its result after the final commit

    # tables
    assert _rows_naming(stack.sessions, SUBJECT) == [] and _rows_naming(stack.sessions, "u4") == []
    # logs: the API's (access and app) and the worker's
    served = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]  # not the client's
    assert any("/v1/users/{user_id}/ratings" in line for line in served)
    assert _texts_naming(served, SUBJECT, "u4") == []
    assert f"job {job_id}: succeeded" in stack.worker_log.read_text()  # the log is there ...
    assert _texts_naming(stack.worker_log.read_text().splitlines(), SUBJECT, "u4") == []  # ... and clean
    # the result backend: an entry per job, none naming the users
    entries = _result_backend_entries(stack.settings)
    assert any(str(job_id) in entry for entry in entries)
    assert _texts_naming(entries, SUBJECT, "u4") == []
    # every file under the data directory (database and its WAL, prepared data, adapters, queue, logs)
    files = [p for p in stack.settings.home.rglob("*") if p.is_file() and "models" not in p.parts]
    assert any(p.name.startswith("samples") for p in files)
    assert [p for p in files if SUBJECT.encode() in p.read_bytes()] == []
    samples = pd.read_csv(stack.settings.data_dir / "samples.csv")
    assert "u4" not in set(samples["user_id"]) and "u3" in set(samples["user_id"])
    # the certificate names the salted hash, not the user
    certificate = client.get(f"/v1/erasure-requests/{filed[1]['id']}/certificate", headers=headers).json()
    payload = base64.b64decode(certificate["payload"]).decode()
    assert _texts_naming([payload], SUBJECT, "u4") == [] and filed[1]["user_hash"] in payload
