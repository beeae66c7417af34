"""A real Celery worker process, with Redis as broker and result backend and PostgreSQL as the registry,
runs one unlearning job (tiny untrained model, stand-in method registered in the worker process)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.migrate import upgrade
from core.db.models import Interaction, utcnow
from core.ml.model import LoadedModel
from core.queue_contract import RUN_JOB_TASK
from core.services import batching, erasures, registry
from core.settings import Settings
from tests.worker.conftest import worker_environment

# the worker imports the stand-in method, then runs as usual
WORKER_MAIN = (
    "import tests.core.conftest; from worker.celery_app import celery_app; "
    "celery_app.worker_main(['worker', '-Q', 'unlearning,celery', '-c', '1', '--pool', 'solo', '-l', 'info'])"
)


@pytest.fixture
def worker_env(tmp_path: Path, db_url: str, redis_url: str) -> dict[str, str]:
    return worker_environment(tmp_path, db_url, redis_url) | {"E2U_LOG_FORMAT": "json"}


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen([sys.executable, "-c", WORKER_MAIN], env=worker_env, stdout=log, stderr=log)
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_worker_runs_one_job(
    session: Session,
    v1_id: str,
    tiny_model: LoadedModel,
    worker_env: dict[str, str],
    worker: subprocess.Popen[bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
) -> None:
    # importing the worker module builds its Celery app from the settings: production would refuse
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")
    from worker.celery_app import make_celery

    settings = Settings(
        environment="development", home=tmp_path, broker_url=redis_url, result_backend=redis_url
    )
    request, _ = erasures.create_erasure_request(session, "u9", None, erasures.IntakeConfig(salt="s"))
    [job_id] = batching.trigger_batch_now(
        session,
        batching.job_settings_from(
            Settings(
                _env_file=None,
                environment="development",
                **{"unlearning_method": "test-nudge"},  # the verifier's real thresholds
            )
        ),
    )
    session.commit()  # enqueue only after the commit
    client = make_celery(settings)
    result = client.send_task(RUN_JOB_TASK, args=[job_id])
    try:
        outcome = result.get(timeout=180)
    except Exception:
        print((tmp_path / "worker.log").read_text()[-4000:])
        raise
    assert outcome["status"] == "succeeded", outcome
    session.expire_all()
    assert erasures.get_erasure_request(session, request.id).status == "completed"
    active = registry.active_adapter(session)
    assert active is not None and active.version_id != v1_id
    assert not Path(registry.get_version(session, v1_id).artifact_path).exists()
    # E2U_LOG_FORMAT=json: one JSON object per log line (Celery prints its start-up banner as text); the
    # pipeline's and the task's lines name the job
    text = (tmp_path / "worker.log").read_text().splitlines()
    lines = [json.loads(line) for line in text if line.startswith("{")]
    of_job = [r for r in lines if r["logger"] in ("core.services.pipeline", "worker.tasks")]
    assert of_job and all(r["job_id"] == job_id for r in of_job)
    assert any(r["message"] == f"job {job_id}: succeeded " for r in of_job)


def test_a_crashing_job_leaves_its_error_text_out_of_the_queue_and_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # importing the worker builds its Celery app
    from worker import tasks

    def crash(*_: object, **__: object) -> None:
        raise KeyError("u9-secret rated 5.0")

    settings = Settings(environment="development", home=tmp_path)
    upgrade(settings.database_url_resolved)  # the task replays the suppression ledger before the job
    monkeypatch.setattr(tasks, "settings", lambda: settings)
    monkeypatch.setattr(tasks, "base_model", lambda: None)
    monkeypatch.setattr(tasks.pipeline, "run_job", crash)
    with caplog.at_level(logging.DEBUG), pytest.raises(tasks.JobCrashed) as raised:
        tasks.run_job(7)
    # what Celery logs and stores: the class and where, never the text
    assert str(raised.value) == "job 7: KeyError (message withheld)" and raised.value.__cause__ is None
    assert "KeyError (message withheld)" in caplog.text and "u9-secret" not in caplog.text


def test_the_worker_engine_honours_the_pool_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str
) -> None:
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # importing the worker builds its Celery app
    from worker import tasks

    pooled = Settings(
        environment="development",
        home=tmp_path,
        database_url=db_url,
        db_pool_size=3,
        db_max_overflow=1,
        db_pool_timeout_seconds=2.5,
    )
    monkeypatch.setattr(tasks, "settings", lambda: pooled)
    monkeypatch.setattr(tasks, "keyring", pooled.keyring)  # not the process-wide cached one
    pool = tasks.engine().pool  # what the tasks' sessions and the WAL checkpoint use
    assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 1, 2.5)  # type: ignore[attr-defined]
    with tasks.sessions()() as session:
        assert session.get_bind() is tasks.engine()


def test_the_beat_deletes_data_due_at_its_deadline_with_no_worker_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str, session: Session, seeded: object
) -> None:
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # importing the worker builds its Celery app
    from worker import tasks

    intake = erasures.IntakeConfig(salt="s")
    late, _ = erasures.create_erasure_request(session, "u4", None, intake, now=utcnow() - timedelta(days=30))
    session.commit()
    current = Settings(environment="development", home=tmp_path, database_url=db_url, batch_size=8)
    monkeypatch.setattr(tasks, "settings", lambda: current)
    monkeypatch.setattr(tasks, "keyring", current.keyring)  # the KEK the seeded rows were sealed under
    monkeypatch.setattr(tasks, "enqueue_jobs", lambda job_ids: None)  # no broker here: nothing is sent
    tasks.form_batches()
    session.expire_all()
    state = erasures.get_erasure_request(session, late.id)
    assert state.rows_deleted and state.profile_deleted and state.status == "queued"  # open, data gone
    assert session.scalars(select(Interaction).where(Interaction.user_id == "u4")).first() is None
