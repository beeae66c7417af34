"""The suppression ledger: a database restored from a backup taken before an erasure replays it, so the
person's data is gone again, the versions trained on it are destroyed, and the backup's own copy of their
rows cannot be read once the KEK has been rotated."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.data_keys import DataKeyError, Keyring, SealedRating, Wrapped
from core.db.engine import checkpoint_wal
from core.db.models import VersionStatus, utcnow
from core.db.repositories import catalog as catalog_repo
from core.ml.data import PreparedData
from core.ml.model import LoadedModel
from core.services import registry
from core.services.data_keys import rotate_kek
from core.services.erasures import user_hash
from core.services.suppression import ensure_replayed, ledger_status
from core.suppression import SuppressionLedger
from tests.core.services.test_pipeline import INTAKE, erase_and_run

USER = "u3"


def _sqlite_path(session: Session) -> Path:
    return Path(str(session.get_bind().url.database))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the backup is a copy of the file
def test_a_restored_backup_replays_the_ledger_before_serving(
    session: Session,
    session_factory: sessionmaker[Session],
    seeded: PreparedData,
    v1_id: str,
    tiny_model: LoadedModel,
    adapters_dir: Path,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    ledger = SuppressionLedger(adapters_dir.parent / "suppression-ledger.jsonl", INTAKE.salt)  # the job's
    engine = session.get_bind()
    path = _sqlite_path(session)
    assert checkpoint_wal(engine)  # type: ignore[arg-type]
    backup = tmp_path / "backup.sqlite"
    shutil.copy(path, backup)

    erase_and_run(session, USER, tiny_model, adapters_dir)
    entries, _ = ledger.read()
    assert [e.user_hash for e in entries] == [user_hash(INTAKE.salt, USER)] and entries[0].item_hashes is None
    assert USER.encode() not in ledger.path.read_bytes()  # no raw id in the ledger
    assert ledger_status(session, ledger).caught_up  # the job recorded its own entry

    # restore the backup (the processes restart on a restored database)
    session.close()
    engine.dispose()  # type: ignore[union-attr]
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copy(backup, path)
    with session_factory() as restored:
        assert catalog_repo.user_known(restored, USER)  # the backup brought the person back ...
        status = ledger_status(restored, ledger)
        assert (status.ledger_entries, status.applied_entries, status.caught_up) == (1, 0, False)
        report = ensure_replayed(restored, ledger, utcnow())  # what the API and worker do on start
        restored.commit()
        assert report is not None and report.subjects_found == 1
        assert report.rows_deleted == int((seeded.samples["user_id"] == USER).sum())
        # ... and the replay took them out again: rows, profile, data key; v1 (trained on them) destroyed
        assert not catalog_repo.user_known(restored, USER)
        assert catalog_repo.data_keys(restored, [USER]) == {}
        assert report.versions_destroyed == [v1_id]
        assert registry.get_version(restored, v1_id).status == VersionStatus.DESTROYED
        assert ledger_status(restored, ledger).caught_up
        assert ensure_replayed(restored, ledger, utcnow()) is None  # once
        others = catalog_repo.usable_interactions(restored)
        assert len(others) == int((seeded.samples["user_id"] != USER).sum())
        sessions = sessionmaker(bind=restored.get_bind(), info=dict(restored.info))
    assert checkpoint_wal(engine)  # type: ignore[arg-type]
    assert USER.encode() not in path.read_bytes()  # secure_delete: the restored file holds none of it

    # the backup file itself still holds the person's sealed rows and wrapped key: readable with the KEK
    # of the day, not after the KEK is rotated (the rotation schedule bounds a backup's exposure)
    with sqlite3.connect(backup) as old:
        query = "SELECT kek_id, wrapped_key FROM user_data_keys WHERE user_id = ?"
        kek_id, wrapped_key = old.execute(query, (USER,)).fetchone()
        query = "SELECT item_id, sealed FROM interactions WHERE user_id = ? LIMIT 1"
        item_id, blob = old.execute(query, (USER,)).fetchone()
    old_copy = Wrapped(kek_id, bytes(wrapped_key))
    assert SealedRating.open(keyring.unwrap(USER, old_copy), USER, item_id, bytes(blob)).rating > 0
    rotate_kek(sessions, actor="test")
    keyring.forget()
    with pytest.raises(DataKeyError, match="retired or unknown"):
        keyring.unwrap(USER, old_copy)
