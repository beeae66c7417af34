"""Bootstrap happens once: after the registry exists, neither the prepared data nor an adapter v1 folder is
imported or registered again (either could bring erased data back)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.orm import Session

from core.db.models import Interaction
from core.ml.data import PreparedData, save_prepared
from core.ml.model import LoadedModel
from core.services import batching, bootstrap, erasures, pipeline, registry
from tests.core.services.test_pipeline import INTAKE, runtime, settings


def test_registry_initialised_blocks_a_second_bootstrap(
    session: Session,
    seeded: PreparedData,
    v1_id: str,
    tiny_model: LoadedModel,
    adapters_dir: Path,
    tmp_path: Path,
) -> None:
    assert bootstrap.registry_is_initialised(session)
    v1_folder = Path(registry.get_version(session, v1_id).artifact_path)
    kept_copy = tmp_path / "v1-copy"
    shutil.copytree(v1_folder, kept_copy)
    erasures.create_erasure_request(session, "u2", None, INTAKE)  # (u1 is held out: never trained on)
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()
    assert (
        pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit).status
        == "succeeded"
    )
    assert not v1_folder.exists()  # the registry deleted it at the first erasure
    active = registry.active_adapter(session)
    assert active is not None

    # someone puts v1 back and the database loses its rows: a restart must not resurrect either
    shutil.copytree(kept_copy, v1_folder)
    session.execute(delete(Interaction))
    session.commit()
    data_dir = tmp_path / "data"
    save_prepared(seeded, data_dir)  # still holds u1
    report = bootstrap.bootstrap(session, data_dir, v1_folder, tiny_model.config.base)
    session.commit()
    assert (report.imported_interactions, report.registered_version) == (0, None)
    assert report.active_version == active.version_id
    assert registry.get_version(session, v1_id).status == "destroyed"
    assert bootstrap.register_first_version(session, v1_folder, tiny_model.config.base) is None


def test_empty_registry_is_not_initialised(session: Session, seeded: PreparedData) -> None:
    assert not bootstrap.registry_is_initialised(session)
