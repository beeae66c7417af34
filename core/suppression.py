"""The suppression ledger: an append-only file, kept outside the database and its backups (beside the
signing key), with one line per erasure whose data was deleted: the subject's salted hash, the scope
(whole user, or salted hashes of the items) and when.  No raw id is written, so it can be kept as long as
backups are.  A database restored from a backup replays it before serving
(``core.services.suppression``); the database records how far it has applied it (its first ``entries``
lines and their sha256).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class LedgerEntry:
    """``user_hash``: the request's salted user hash (as in its certificate); ``item_hashes``: salted
    hashes of the erased items, None for the whole user; ``deleted_at``: when the rows were deleted."""

    user_hash: str
    item_hashes: tuple[str, ...] | None
    deleted_at: datetime

    def to_line(self) -> bytes:
        record = {
            "user_hash": self.user_hash,
            "scope": "user" if self.item_hashes is None else "items",
            "items": None if self.item_hashes is None else sorted(self.item_hashes),
            "deleted_at": self.deleted_at.isoformat(),
        }
        return (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> LedgerEntry:
        record = json.loads(line)
        items = record["items"]
        return cls(
            str(record["user_hash"]),
            None if items is None else tuple(str(i) for i in items),
            datetime.fromisoformat(record["deleted_at"]),
        )


@dataclass(frozen=True)
class LedgerPosition:
    """The first ``entries`` lines of the ledger, whose bytes hash (sha256, hex) to ``digest``."""

    entries: int
    digest: str


class SuppressionLedger:
    """The ledger file at ``path``; ``salt`` (the certificate salt) hashes item ids."""

    def __init__(self, path: Path, salt: str):
        self.path, self.salt = path, salt

    def item_hash(self, user_hash: str, item_id: str) -> str:
        """HMAC-SHA256 of an item id under the salt, bound to its subject (hex)."""
        message = f"ledger-item\x00{user_hash}\x00{item_id}".encode()
        return hmac.new(self.salt.encode(), message, hashlib.sha256).hexdigest()

    def entry(self, user_hash: str, item_ids: Sequence[str] | None, deleted_at: datetime) -> LedgerEntry:
        items = None if item_ids is None else tuple(self.item_hash(user_hash, i) for i in item_ids)
        return LedgerEntry(user_hash, items, deleted_at)

    def append(self, entries: Sequence[LedgerEntry]) -> None:
        """Append ``entries`` durably (one write, then fsync): call before the transaction that deletes
        their data commits, so that no committed deletion is missing from the ledger."""
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, b"".join(e.to_line() for e in entries))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _lines(self) -> list[bytes]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return data.splitlines(keepends=True)

    def read(self) -> tuple[list[LedgerEntry], LedgerPosition]:
        """Every entry, and the position at the end of the file."""
        lines = self._lines()
        return [LedgerEntry.from_line(line) for line in lines], _position(lines)

    def position(self, entries: int | None = None) -> LedgerPosition:
        """The position after the first ``entries`` lines (all if None)."""
        lines = self._lines()
        return _position(lines if entries is None else lines[:entries])

    def positions(self, entries: int) -> tuple[LedgerPosition, LedgerPosition]:
        """The position after the first ``entries`` lines and the one at the end, from one read of the
        file and without parsing it (what readiness asks at every probe)."""
        lines = self._lines()
        return _position(lines[:entries]), _position(lines)


def _position(lines: list[bytes]) -> LedgerPosition:
    return LedgerPosition(len(lines), hashlib.sha256(b"".join(lines)).hexdigest())
