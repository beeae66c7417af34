"""Drill: the disk fills up while a job writes its child adapter (the weights file half written, then
ENOSPC).  The job fails cleanly and is tried again (an infrastructure error: its lease kept for the retry
delay, the gate budget not spent); no half-written version is ever registered or served; the retry, by
another worker, completes and leaves no half-written folder in the store."""

from __future__ import annotations

import errno
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.db.models import ErasureStatus, utcnow
from core.ml import unlearning_job
from core.ml.model import LoadedModel
from core.services import batching, erasures, pipeline, registry
from tests.core.services.test_pipeline import INTAKE, runtime, settings


def test_disk_full_while_writing_an_adapter(
    session: Session,
    v1_id: str,
    tiny_model: LoadedModel,
    adapters_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request, _ = erasures.create_erasure_request(session, "u3", None, INTAKE)
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()

    def disk_full(loaded: LoadedModel, name: str, folder: Path, metadata: Any = None) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 100)  # what fitted
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(unlearning_job, "save_adapter", disk_full)
    first = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir, "w1"), session.commit)
    assert first.status == "retry" and first.retry_in_seconds is not None, first
    assert first.reason == "infrastructure error in phase verify: OSError", first.reason
    session.expire_all()
    assert [v.id for v in registry.list_versions(session)] == [v1_id]  # nothing half-written registered
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == v1_id  # ... nor served
    assert erasures.get_erasure_request(session, request.id).status != ErasureStatus.COMPLETED

    monkeypatch.undo()  # space again; another worker takes the job up once the retry delay is over
    later = runtime(tiny_model, adapters_dir, "w2")
    later.clock = lambda: utcnow() + timedelta(seconds=first.retry_in_seconds + 1)  # type: ignore[operator]
    second = pipeline.run_job(session, job_id, later, session.commit)
    assert second.status == "succeeded", second.reason
    session.expire_all()
    active = registry.active_adapter(session)
    assert active is not None and active.version_id != v1_id
    assert erasures.get_erasure_request(session, request.id).status == ErasureStatus.COMPLETED
    assert sorted(p.name for p in adapters_dir.iterdir()) == [active.version_id]  # no half-written folder
    print(
        f"\nDRILL disk-full: job {job_id} -> {first.status} ({first.reason}), nothing registered;"
        f" retried by another worker -> {second.status}, {active.version_id} active, store clean"
    )
