"""Key-encryption key rotation: a new KEK, every live data key rewrapped under it, the old KEK deleted.
From then on the wrapped keys in old copies of the database (backups, WAL, old row versions) cannot be
unwrapped: rotating at least once per erasure deadline bounds how long an erased user's key, deleted from
the live table but kept in a backup, stays usable (docs/privacy.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.db.models import utcnow
from core.db.repositories import audit as audit_repo
from core.db.repositories import catalog as catalog_repo


@dataclass(frozen=True)
class KekRotation:
    old_kek_id: str
    new_kek_id: str
    rewrapped: int
    retired: list[str]


def rotate_kek(sessions: Callable[[], Session], actor: str, batch: int = 5000) -> KekRotation:
    """Rotate the KEK of the keyring that ``sessions`` carry; each batch of rewraps is its own transaction.
    Safe to run again after an interruption (the retiring KEK stays until every key is rewrapped)."""
    with sessions() as session:
        keyring = catalog_repo.keyring(session)
    old, new = keyring.begin_rotation()
    rewrapped = 0
    while True:  # until no key is left under another KEK (a process may still wrap under the old one)
        with sessions() as session:
            done = catalog_repo.rewrap_data_keys(session, batch)
            session.commit()
        rewrapped += done
        if done == 0:
            break
    retired = keyring.finish_rotation()
    with sessions() as session:
        audit_repo.record(
            session,
            utcnow(),
            actor,
            "data_keys.kek_rotated",
            "kek",
            new,
            retired=retired,
            rewrapped=rewrapped,
        )
        session.commit()
    return KekRotation(old, new, rewrapped, retired)
