"""Drill: a corrupted adapter file in the store (one byte of its weights flipped, the file still parses)
is detected by the sha256 the registry recorded, and is never served, never unlearned from as a parent,
and never promoted."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.runtime import resolver
from core.db.models import ErasureStatus, VersionStatus
from core.ml.model import CorruptAdapter, LoadedModel, adapter_sha256
from core.ml.prompts import Catalog
from core.services import batching, erasures, pipeline, registry
from core.services.errors import VersionUnavailable
from core.serving import AdapterWatcher, ModelServer, NoActiveAdapter
from tests.core.services.test_pipeline import INTAKE, runtime, settings


def corrupt(folder: Path) -> None:
    """Flip one byte in the middle of the weights (past the safetensors header: the file still loads)."""
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 + 7] ^= 0xFF
    weights.write_bytes(bytes(data))


def test_a_corrupted_active_adapter_is_never_served(
    session: Session, session_factory: sessionmaker[Session], v1_id: str, tiny_model: LoadedModel
) -> None:
    folder = Path(registry.get_version(session, v1_id).artifact_path)
    corrupt(folder)
    server = ModelServer(tiny_model, Catalog(titles={}, profiles={}))
    watcher = AdapterWatcher(server, lambda: resolver(session_factory))
    with pytest.raises(CorruptAdapter, match="the registry recorded"):
        watcher.refresh()
    assert server.active_version is None and server.loaded_versions() == []
    with pytest.raises(NoActiveAdapter), server.lease():
        pass
    print(f"\nDRILL corrupt-adapter serve: {v1_id} refused by sha256; nothing served (503 until repaired)")


def test_a_corrupted_parent_is_never_unlearned_from(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    request, _ = erasures.create_erasure_request(session, "u3", None, INTAKE)
    [job_id] = batching.trigger_batch_now(session, settings(max_retries=3))
    session.commit()
    corrupt(Path(registry.get_version(session, v1_id).artifact_path))
    outcome = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit)
    assert outcome.status == "failed" and "CorruptAdapter" in (outcome.reason or ""), outcome
    session.expire_all()
    assert [v.id for v in registry.list_versions(session)] == [v1_id]  # no child made from it
    assert erasures.get_erasure_request(session, request.id).status == ErasureStatus.QUEUED  # tried again
    assert sorted(p.name for p in adapters_dir.iterdir()) == ["v1"]
    print(f"\nDRILL corrupt-adapter parent: job {job_id} failed cleanly ({outcome.reason}); request queued")


def test_a_corrupted_candidate_is_never_promoted(session: Session, v1_id: str, adapters_dir: Path) -> None:
    other = adapters_dir / "other"
    other.mkdir()
    v1 = Path(registry.get_version(session, v1_id).artifact_path)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (other / name).write_bytes((v1 / name).read_bytes())
    registry.register_version(session, "other", v1_id, "tiny", other, adapter_sha256(other), {}, {}, set())
    corrupt(other)
    with pytest.raises(VersionUnavailable, match="the registry recorded"):
        registry.promote_version(session, "other", v1_id, 1, "admin")
    session.rollback()
    active = registry.active_adapter(session)
    assert active is not None and (active.version_id, active.counter) == (v1_id, 1)
    assert registry.get_version(session, v1_id).status == VersionStatus.ACTIVE
