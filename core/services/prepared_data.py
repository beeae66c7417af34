"""The prepared data folder on disk (``core.ml.data.save_prepared`` output, ``<home>/data/default``) after
an erasure: the erased scope leaves its files too, not only the database.

The folder is rewritten whole and swapped in by rename, under a file lock, so that a reader never sees
half a rewrite and two purging workers never lose each other's deletions.  A crash between the two
renames is finished by the next call (``_recover``), which also deletes any leftover old copy: it still
holds the erased data.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from core.ml.data import PreparedData, drop_interactions, load_prepared, save_prepared

WRITTEN_FILES = ("samples.csv", "items.csv", "users.csv", "manifest.json")


@dataclass(frozen=True)
class ScopeToPurge:
    """One erasure request's scope: the whole user (``items`` None) or those items of the user."""

    key: str  # the request id: counts are reported per key
    user_id: str
    items: tuple[str, ...] | None


@dataclass(frozen=True)
class PreparedPurge:
    """What a purge did.  ``sha256_*``: the manifest's content hash before and after (equal when the files
    held nothing in scope and were left as they were)."""

    samples_removed: dict[str, int]  # per scope key
    profiles_removed: int
    sha256_before: str
    sha256_after: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(f".{folder.name}.{suffix}")


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    lock_path = _sibling(folder, "lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _recover(folder: Path) -> None:
    new, old = _sibling(folder, "new"), _sibling(folder, "old")
    if not folder.exists() and (new / "manifest.json").exists():
        os.replace(new, folder)  # the crash fell between the two renames
    shutil.rmtree(new, ignore_errors=True)  # an unfinished rewrite
    shutil.rmtree(old, ignore_errors=True)  # the previous copy: it still carries the erased data


def _drop(data: PreparedData, scope: ScopeToPurge) -> PreparedData:
    if scope.items is None:
        return drop_interactions(data, users=[scope.user_id])
    return drop_interactions(data, pairs=[(scope.user_id, item) for item in scope.items])


def purge_prepared(folder: Path, scopes: Iterable[ScopeToPurge]) -> PreparedPurge | None:
    """Remove ``scopes`` from the prepared data in ``folder`` and rewrite it with a new content hash.

    None when ``folder`` holds no prepared data.  Idempotent: a scope already gone removes nothing and
    leaves the files untouched.  Files other than those ``save_prepared`` writes are carried over.
    """
    with _locked(folder):
        _recover(folder)
        if not (folder / "manifest.json").exists():
            return None
        data = load_prepared(folder)
        before, users_before = data.content_hash(), len(data.users)
        removed: dict[str, int] = {}
        for scope in scopes:
            smaller = _drop(data, scope)
            removed[scope.key] = removed.get(scope.key, 0) + len(data.samples) - len(smaller.samples)
            data = smaller
        after = data.content_hash()
        if after != before:
            new, old = _sibling(folder, "new"), _sibling(folder, "old")
            save_prepared(data, new)
            for extra in folder.iterdir():
                if extra.name not in WRITTEN_FILES:
                    target = new / extra.name
                    if extra.is_dir():
                        shutil.copytree(extra, target)
                    else:
                        shutil.copy2(extra, target)
            os.replace(folder, old)
            os.replace(new, folder)
            shutil.rmtree(old)
        return PreparedPurge(removed, users_before - len(data.users), before, after)
