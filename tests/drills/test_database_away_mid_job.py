"""Drill (default run, a few seconds): the database goes away in the middle of a job's model work (closed
to new connections, its connections dropped), in-process on a PostgreSQL database of the drill's own.

The job must end its attempt cleanly with ``retry`` (an infrastructure error: the lease runs out on its
own, since recording the retry needs the database too), and once the database is back and the lease has
expired another worker completes the job.  Before the fix in ``pipeline._retry_later`` the attempt
crashed instead (it read the job row that its rollback had expired, which needs the database), so the
real worker logged ``job crashed`` and recovery depended on the lease alone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.db.models import ErasureStatus, utcnow
from core.ml.model import LoadedModel
from core.services import batching, erasures, pipeline, registry
from tests.core.services.test_pipeline import INTAKE, runtime, settings
from tests.drills import harness


@pytest.fixture
def db_url(own_database: tuple[str, str]) -> str:
    return own_database[1]


@pytest.mark.postgres
def test_the_database_away_mid_job_ends_the_attempt_with_a_retry(
    session: Session,
    v1_id: str,
    own_database: tuple[str, str],
    tiny_model: LoadedModel,
    adapters_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = own_database[0]
    request, _ = erasures.create_erasure_request(session, "u3", None, INTAKE)
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()
    unlearn_and_verify = pipeline.unlearn_and_verify

    def database_away(*args: Any, **kwargs: Any) -> Any:
        harness.allow_connections(name, False)
        harness.terminate_backends(name)
        return unlearn_and_verify(*args, **kwargs)  # its first progress report needs the database

    monkeypatch.setattr(pipeline, "unlearn_and_verify", database_away)
    try:
        first = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir, "w1"), session.commit)
    finally:
        harness.allow_connections(name, True)
    assert first.status == "retry", first
    # the row still says collect: the beat that moves it to unlearn is the write that failed
    assert first.reason == "infrastructure error in phase collect: OperationalError", first.reason
    assert first.retry_in_seconds == 60  # the lease: the retry could not be recorded

    monkeypatch.undo()
    session.rollback()
    later = runtime(tiny_model, adapters_dir, "w2")
    later.clock = lambda: utcnow() + timedelta(seconds=61)  # past the lease
    second = pipeline.run_job(session, job_id, later, session.commit)
    assert second.status == "succeeded", second.reason
    session.expire_all()
    active = registry.active_adapter(session)
    assert active is not None and active.version_id != v1_id
    assert erasures.get_erasure_request(session, request.id).status == ErasureStatus.COMPLETED
    print(
        f"\nDRILL database-away mid-job: attempt 1 -> {first.status} ({first.reason}, the lease kept"
        f" {first.retry_in_seconds:.0f} s); database back, another worker -> {second.status}"
    )
