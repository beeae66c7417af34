"""After a promotion the job waits for every live serving process to confirm the new version before it
destroys the old weights and completes, and the certificate records when each did (or which did not)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.db.models import ServingConfirmation, utcnow
from core.db.repositories import serving as serving_repo
from core.ml.model import LoadedModel
from core.ml.prompts import Catalog
from core.services import batching, erasures, pipeline, registry
from core.services.certificates import verify_certificate
from core.serving import ActiveAdapter, AdapterWatcher, ModelServer
from tests.core.services.test_pipeline import INTAKE, JWKS, settings
from tests.core.services.test_pipeline import runtime as pipeline_runtime


def _run(session: Session, user: str, model: LoadedModel, adapters_dir: Path, timeout: float) -> tuple:
    request, _ = erasures.create_erasure_request(session, user, None, INTAKE)
    session.commit()
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()
    runtime = pipeline_runtime(model, adapters_dir, serving_switch_timeout_seconds=timeout)
    outcome = pipeline.run_job(session, job_id, runtime, session.commit)
    assert outcome.status == "succeeded", outcome.reason
    predicate = verify_certificate(erasures.get_certificate(session, request.id), JWKS)["predicate"]
    return batching.get_job(session, job_id), predicate


def serving_process(
    server: ModelServer,
    session_factory: sessionmaker[Session],
    poll_seconds: float,
    process_id: str = "api-1",
) -> AdapterWatcher:
    """The watcher of a serving process on ``server``: follows the registry's active version and records
    its switches as ``process_id``, as an API process does."""

    def resolve() -> ActiveAdapter | None:
        with session_factory() as own:
            active = registry.active_adapter(own)
        return None if active is None else ActiveAdapter(active.version_id, Path(active.artifact_path))

    def confirm(version: str) -> None:
        with session_factory() as own:
            serving_repo.confirm(own, process_id, version, utcnow())
            own.commit()

    return AdapterWatcher(server, resolve, poll_seconds=poll_seconds, confirm=confirm, confirm_seconds=0.5)


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def test_the_job_waits_for_the_serving_process_and_destroys_the_old_weights_after_its_switch(
    session: Session,
    session_factory: sessionmaker[Session],
    v1_id: str,
    tiny_model: LoadedModel,
    adapters_dir: Path,
) -> None:
    # a serving process: the real model server and watcher, on a slow poll so that the job must wait
    server = ModelServer(copy.deepcopy(tiny_model), Catalog(titles={}, profiles={}), batch_size=8)
    watcher = serving_process(server, session_factory, poll_seconds=1.5)
    watcher.tick()
    assert server.active_version == v1_id
    watcher.start()
    try:
        job, predicate = _run(session, "u5", tiny_model, adapters_dir, timeout=60)
        # completion is reported only once the process serves the new version
        assert server.active_version == job.child_version_id != v1_id
    finally:
        watcher.stop()
    serving = predicate["serving"]
    assert serving["version_id"] == job.child_version_id and serving["missing"] == []
    switched = _at(serving["confirmed"]["api-1"])
    assert _at(serving["all_switched_at"]) == switched
    assert _at(predicate["timestamps"]["promoted_at"]) <= switched
    # the old weights went only after the process had switched
    assert switched <= _at(predicate["timestamps"]["old_weights_destroyed_at"])
    assert "serving" not in predicate["verification"]["metrics"]


def test_a_process_that_never_confirms_is_named_missing_after_the_bounded_wait(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    now = utcnow()
    for process, seen in (("stuck", now), ("gone", now - timedelta(minutes=5))):
        session.add(
            ServingConfirmation(process_id=process, version_id=v1_id, confirmed_at=seen, seen_at=seen)
        )
    session.commit()
    job, predicate = _run(session, "u5", tiny_model, adapters_dir, timeout=1.0)
    serving = predicate["serving"]
    # the live process that kept serving the old version is named; the one not seen for minutes is not live
    assert serving["missing"] == ["stuck"] and serving["confirmed"] == {}
    assert serving["all_switched_at"] is None and serving["version_id"] == job.child_version_id
