"""Bring your own recommender: a LoRA adapter trained elsewhere (plain PEFT ``save_pretrained``) becomes
the first version, the root of the lineage, marked ``"kind": "imported"`` in its config.

It is checked against the base model this service runs (``core.ml.model.check_imported_adapter``), loaded
(its weights must fit the base), evaluated on a split of the prepared data with bootstrap intervals, copied
into the adapter store under its content id, and registered and made active, with the prepared data
imported into an empty database beside it.  Like adapter v1 it can only be the first version: a root
registered after an erasure could carry the erased data back.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import utcnow
from core.ml.data import SPLITS, PreparedData
from core.ml.evaluation import evaluate_all
from core.ml.model import (
    ImportedAdapterInfo,
    LoadedModel,
    ModelError,
    adapter_sha256,
    check_imported_adapter,
    load_adapter,
    unload_adapter,
    verify_adapter,
)
from core.ml.workflows import scorer_for
from core.services import registry
from core.services.bootstrap import import_prepared, registry_is_initialised
from core.services.errors import Conflict, InvalidInput

IMPORTED = "imported"  # the ``kind`` in an imported version's config
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class ImportedVersion:
    version_id: str
    sha256: str
    check: ImportedAdapterInfo
    evaluation: dict[str, Any]  # split, samples, and each model's AUC with its 95% interval
    imported_interactions: int  # rows imported into the database now (0 when it already held data)


def evaluate_adapter(loaded: LoadedModel, folder: Path, data: PreparedData, split: str) -> dict[str, Any]:
    """The adapter's AUC (bootstrap 95% interval), LogLoss and accuracy on ``split``, beside the two
    non-LLM references; ModelError when its weights do not fit the base."""
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    target = data.split(split)
    if target.empty or target["label"].nunique() < 2:
        raise InvalidInput(f"the {split!r} split needs samples of both labels to evaluate the adapter")
    name = "import_check"
    try:
        load_adapter(loaded, folder, name)
    except (RuntimeError, ValueError, KeyError) as error:  # what peft raises for weights that do not fit
        raise ModelError(f"{folder}: the adapter's weights do not fit the base model: {error}") from None
    try:
        results = evaluate_all(scorer_for(loaded, data), data.split("train"), target, progress=False)
    finally:
        unload_adapter(loaded, name)
    return {"split": split, "samples": len(target), "results": [r.as_dict() for r in results]}


def _copy_into_store(source: Path, folder: Path, sha256: str, metadata: dict[str, Any]) -> None:
    """Copy the adapter's files to ``folder`` (written aside, then renamed) and check the copy's hash."""
    if folder.exists():
        raise Conflict(f"{folder} already exists in the adapter store")
    staging = folder.with_name(folder.name + ".importing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(source / name, staging / name)
    (staging / "e2u.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))
    verify_adapter(staging, sha256)
    staging.rename(folder)


def import_adapter(
    session: Session,
    loaded: LoadedModel,
    source: Path,
    data: PreparedData,
    adapters_dir: Path,
    base_model: str,
    expected_base_sha256: str | None = None,
    split: str = "test",
    actor: str = "import",
    now: datetime | None = None,
) -> ImportedVersion:
    """Check, evaluate, store, register and activate ``source`` as the first version (see the module
    docstring).  Conflict once any version exists; ModelError for an adapter that does not fit; flushes
    only (the caller commits; after a failed commit the copied folder is left for an operator to remove)."""
    if registry_is_initialised(session):
        raise Conflict(
            "the registry already holds versions: an imported adapter can only be the first version "
            "(the root of the lineage), before any erasure"
        )
    check = check_imported_adapter(loaded, source, expected_base_sha256)
    sha256 = adapter_sha256(source)
    evaluation = evaluate_adapter(loaded, source, data, split)
    version_id = sha256[:16]
    config = {
        "kind": IMPORTED,
        "imported": {"source": str(source), **check.to_dict()},
        "model": loaded.config.to_dict(),
        "prompt": loaded.prompt.to_dict(),
        "data_sha256": data.content_hash(),
    }
    folder = adapters_dir / version_id
    _copy_into_store(source, folder, sha256, config)
    imported = import_prepared(session, data)
    when = now or utcnow()
    registry.register_version(
        session,
        version_id,
        None,
        base_model,
        folder.resolve(),
        sha256,
        config,
        {"evaluation": evaluation},
        set(),
        None,
        when,
    )
    registry.activate_first(session, version_id, actor=actor, now=when)
    return ImportedVersion(version_id, sha256, check, evaluation, imported)
