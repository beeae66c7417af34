"""Crypto-shredding: per-user data keys under a key-encryption key (KEK) kept outside the database.

Each user's stored ratings and profile are sealed with AES-256-GCM under that user's data key
(``DataKey``); the data key is stored in the database wrapped (AES-256-GCM again) under the KEK, which
lives in a file beside the signing key.  A database copy alone (backup, WAL, replica, old row versions)
decrypts nothing, and destroying a user's data key makes every copy of their rows unreadable.

The KEK file holds one base64 line (32 random bytes).  Rotation (``Keyring.begin_rotation`` /
``finish_rotation``, driven by ``e2u keys rotate-kek``) keeps the old KEK beside the new one as
``<file>.retiring-<kid>`` until every data key is rewrapped, then deletes it: from then on a wrapped key
in an old backup can no longer be unwrapped.  Processes notice a rotation by the file's modification time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.secret_files import write_secret_file

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96-bit random nonce, stored in front of each ciphertext
RETIRING = ".retiring-"
UNWRAPPED_CACHE_LIMIT = 100_000  # unwrapped data keys a process keeps (then the cache starts over)


class DataKeyError(RuntimeError):
    """A KEK file is missing or malformed, or a blob does not open under its key (tampered, moved to
    another row, or sealed under a destroyed key)."""


class DataKey:
    """One user's AES-256-GCM key: ``seal`` / ``open`` blobs bound to ``aad`` (the row they belong to)."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise DataKeyError(f"a data key has {KEY_BYTES} bytes, got {len(key)}")
        self.key = key
        self._aead = AESGCM(key)

    @classmethod
    def generate(cls) -> DataKey:
        return cls(AESGCM.generate_key(bit_length=8 * KEY_BYTES))

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, aad: bytes, blob: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DataKeyError("a sealed value does not open under its key (tampered or moved)") from None


def kek_id(kek: bytes) -> str:
    """A KEK's public name: the first 16 hex digits of its sha256 (stored beside each wrapped key)."""
    return hashlib.sha256(kek).hexdigest()[:16]


def _read_kek(path: Path) -> bytes:
    try:
        kek = base64.b64decode(path.read_text().strip(), validate=True)
    except FileNotFoundError:
        raise DataKeyError(f"no key-encryption key at {path}") from None
    except ValueError:
        raise DataKeyError(f"{path}: not a base64 key-encryption key") from None
    if len(kek) != KEY_BYTES:
        raise DataKeyError(f"{path}: a key-encryption key has {KEY_BYTES} bytes, got {len(kek)}")
    return kek


def _write_kek(path: Path, kek: bytes, replace: bool) -> None:
    write_secret_file(path, base64.b64encode(kek) + b"\n", replace)


def create_kek_file(path: Path) -> str:
    """Write a new random KEK to ``path`` (refused if it exists); returns its id."""
    if path.exists():
        raise DataKeyError(f"{path} exists; rotate with `e2u keys rotate-kek` instead")
    kek = AESGCM.generate_key(bit_length=8 * KEY_BYTES)
    _write_kek(path, kek, replace=False)
    return kek_id(kek)


@dataclass(frozen=True)
class Wrapped:
    """A data key as stored: sealed under the KEK ``kek_id``."""

    kek_id: str
    blob: bytes


class Keyring:
    """The KEK (file ``kek_file``, plus any retiring one of an unfinished rotation) and the data keys it
    unwraps.  ``create_missing``: create the KEK file on first use (development only; production refuses
    to start without one, see ``core.settings``).  Thread-safe; one per process."""

    def __init__(self, kek_file: Path, create_missing: bool = False):
        self.kek_file = kek_file
        if create_missing and not kek_file.exists():
            _write_kek(kek_file, AESGCM.generate_key(bit_length=8 * KEY_BYTES), replace=False)
        self._lock = threading.Lock()
        self._seen: tuple[int, tuple[str, ...]] | None = None
        self._keks: dict[str, AESGCM] = {}
        self._active = ""
        self._unwrapped: dict[tuple[str, bytes], DataKey] = {}
        self._reload()

    def _retiring_files(self) -> list[Path]:
        return sorted(self.kek_file.parent.glob(f"{self.kek_file.name}{RETIRING}*"))

    def _reload(self) -> None:
        """Read the KEK files again if they changed (a rotation in another process)."""
        try:
            stamp = (self.kek_file.stat().st_mtime_ns, tuple(p.name for p in self._retiring_files()))
        except FileNotFoundError:
            raise DataKeyError(f"no key-encryption key at {self.kek_file}") from None
        if stamp == self._seen:
            return
        with self._lock:
            active = _read_kek(self.kek_file)
            keks = {kek_id(k): AESGCM(k) for k in map(_read_kek, self._retiring_files())}
            keks[kek_id(active)] = AESGCM(active)
            self._keks, self._active, self._seen = keks, kek_id(active), stamp

    @property
    def active_kek_id(self) -> str:
        self._reload()
        return self._active

    def kek_ids(self) -> set[str]:
        """Every KEK this process can unwrap with (the active one and any retiring one)."""
        self._reload()
        return set(self._keks)

    @staticmethod
    def _aad(user_id: str, kid: str) -> bytes:
        return f"e2u/data-key\x00{user_id}\x00{kid}".encode()

    def wrap(self, user_id: str, key: DataKey) -> Wrapped:
        """``key`` sealed under the active KEK, bound to ``user_id``."""
        kid = self.active_kek_id
        nonce = os.urandom(NONCE_BYTES)
        return Wrapped(kid, nonce + self._keks[kid].encrypt(nonce, key.key, self._aad(user_id, kid)))

    def unwrap(self, user_id: str, wrapped: Wrapped) -> DataKey:
        """The data key of ``user_id`` (cached by its wrapped form, so a rekeyed or destroyed key is
        never taken for the current one).  DataKeyError for a KEK this process does not hold (retired)."""
        cache_key = (user_id, wrapped.blob)
        found = self._unwrapped.get(cache_key)
        if found is not None:
            return found
        self._reload()
        aead = self._keks.get(wrapped.kek_id)
        if aead is None:
            raise DataKeyError(f"data key wrapped under KEK {wrapped.kek_id}, which is retired or unknown")
        blob = wrapped.blob
        try:
            raw = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(user_id, wrapped.kek_id))
        except InvalidTag:
            raise DataKeyError("a wrapped data key does not open under its KEK") from None
        key = DataKey(raw)
        if len(self._unwrapped) >= UNWRAPPED_CACHE_LIMIT:
            self._unwrapped.clear()
        self._unwrapped[cache_key] = key
        return key

    def forget(self) -> None:
        """Drop every unwrapped key this process holds (after a purge, a rotation)."""
        self._unwrapped.clear()

    # ------------------------------------------------------------------ rotation

    def begin_rotation(self) -> tuple[str, str]:
        """Make a new KEK active; the old one stays beside it (``<file>.retiring-<kid>``) for unwrapping
        until ``finish_rotation``.  Returns (old id, new id)."""
        old = _read_kek(self.kek_file)
        _write_kek(self.kek_file.with_name(f"{self.kek_file.name}{RETIRING}{kek_id(old)}"), old, replace=True)
        new = AESGCM.generate_key(bit_length=8 * KEY_BYTES)
        _write_kek(self.kek_file, new, replace=True)
        self._reload()
        return kek_id(old), kek_id(new)

    def finish_rotation(self) -> list[str]:
        """Delete every retiring KEK (call once no data key is wrapped under one).  Returns their ids."""
        gone = []
        for path in self._retiring_files():
            gone.append(path.name.rsplit(RETIRING, 1)[1])
            path.unlink()
        self.forget()
        self._reload()
        return gone


# ---------------------------------------------------------------------- what is sealed, and how
# Each blob is bound to its row by the associated data (table, user, item): a blob copied onto another
# row does not open.  The payload is a compact JSON list.


def _rating_aad(user_id: str, item_id: str) -> bytes:
    return f"interactions\x00{user_id}\x00{item_id}".encode()


def _profile_aad(user_id: str) -> bytes:
    return f"user_profiles\x00{user_id}".encode()


@dataclass(frozen=True)
class SealedRating:
    """What an interaction row keeps sealed: stars, unix seconds, the label and the prompt history."""

    rating: float
    timestamp: int
    label: int
    history: str

    def seal(self, key: DataKey, user_id: str, item_id: str) -> bytes:
        payload = json.dumps([self.rating, self.timestamp, self.label, self.history], separators=(",", ":"))
        return key.seal(_rating_aad(user_id, item_id), payload.encode())

    @classmethod
    def open(cls, key: DataKey, user_id: str, item_id: str, blob: bytes) -> SealedRating:
        rating, timestamp, label, history = json.loads(key.open(_rating_aad(user_id, item_id), blob))
        return cls(float(rating), int(timestamp), int(label), str(history))


@dataclass(frozen=True)
class SealedProfile:
    """What a profile row keeps sealed."""

    age: str
    gender: str
    occupation: str

    def seal(self, key: DataKey, user_id: str) -> bytes:
        payload = json.dumps([self.age, self.gender, self.occupation], separators=(",", ":"))
        return key.seal(_profile_aad(user_id), payload.encode())

    @classmethod
    def open(cls, key: DataKey, user_id: str, blob: bytes) -> SealedProfile:
        age, gender, occupation = json.loads(key.open(_profile_aad(user_id), blob))
        return cls(str(age), str(gender), str(occupation))
