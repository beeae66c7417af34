"""First start: import the prepared data into an empty database and register the trained adapter v1 as
the first active version.  Both happen once, before the registry exists: afterwards the prepared data and
adapter v1 may predate erasures (the registry deletes ``adapters/v1`` at the first one), so they are never
imported, trained or registered again (``registry_is_initialised``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from core.db.models import utcnow
from core.db.repositories import adapters as adapter_repo
from core.db.repositories import catalog as catalog_repo
from core.ml.data import PreparedData, load_prepared
from core.ml.model import adapter_sha256
from core.ml.workflows import read_adapter_metadata
from core.services import registry


@dataclass(frozen=True)
class BootstrapReport:
    imported_interactions: int  # 0 when the database already held data
    registered_version: str | None  # the version made active now, if any
    active_version: str | None


def registry_is_initialised(session: Session) -> bool:
    """True once any adapter version was registered.  The launcher must then neither prepare data nor
    train adapter v1, and ``bootstrap`` imports and registers nothing: either could bring erased data back."""
    return adapter_repo.any_version(session)


def import_prepared(session: Session, data: PreparedData) -> int:
    """Import items, profiles and samples (one interaction row each, with its split) if the database holds
    no interactions yet and the registry is not initialised.  Returns the number of rows imported."""
    if registry_is_initialised(session) or catalog_repo.has_any_interactions(session):
        return 0
    catalog_repo.bulk_import(session, data.items, data.users, data.samples)
    return len(data.samples)


def register_first_version(
    session: Session, adapter_folder: Path, base_model: str, now: datetime | None = None
) -> str | None:
    """Register ``adapter_folder`` (a saved adapter) and make it active, if no version was ever registered.
    The registry then owns the folder: it is deleted when a promotion supersedes it.  Returns its id, or
    None when the registry is already initialised (a v1 folder found later is never registered)."""
    if registry_is_initialised(session) or adapter_repo.alias(session) is not None:
        return None
    sha = adapter_sha256(adapter_folder)
    version_id = sha[:16]
    metadata = read_adapter_metadata(adapter_folder)
    registry.register_version(
        session,
        version_id,
        None,
        base_model,
        adapter_folder.resolve(),
        sha,
        {k: metadata[k] for k in ("kind", "train", "model", "data_sha256") if k in metadata},
        {"train_result": {k: v for k, v in metadata.get("result", {}).items() if k != "curve"}},
        set(),
        None,
        now,
    )
    registry.activate_first(session, version_id, now=now or utcnow())
    return version_id


def bootstrap(
    session: Session,
    data_dir: Path | None,
    adapter_folder: Path | None,
    base_model: str,
    now: datetime | None = None,
) -> BootstrapReport:
    """Both steps above; ``data_dir`` holds ``core.ml.data.save_prepared`` output (read only when the
    database is empty).  Flushes only: the caller commits."""
    imported = 0
    if (
        data_dir is not None
        and not registry_is_initialised(session)
        and not catalog_repo.has_any_interactions(session)
    ):
        imported = import_prepared(session, load_prepared(data_dir))
    registered = None
    if adapter_folder is not None and (adapter_folder / "adapter_model.safetensors").exists():
        registered = register_first_version(session, adapter_folder, base_model, now)
    active = registry.active_adapter(session)
    return BootstrapReport(imported, registered, active.version_id if active else None)
