"""API keys with scopes; only the sha256 of a key is stored."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from core.db.models import ApiKey, utcnow
from core.db.repositories import audit as audit_repo
from core.services.errors import ApiKeyExpired, Forbidden, InvalidInput, NotFound, Unauthorized

SCOPES = ("recommend", "erase", "admin")
KEY_PREFIX = "e2u_"
# ``last_used_at`` is written at most this often per key: one write a minute, not one per request
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


DURATION_PATTERN = r"^([1-9][0-9]{0,5})([mhd])$"
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MAX_LIFETIME = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h`` or ``90d`` as a duration (at most ten years)."""
    match = re.fullmatch(DURATION_PATTERN, text.strip())
    if match is None:
        raise InvalidInput(f"a duration is a whole number of m, h or d (30m, 12h, 90d); got {text!r}")
    duration = int(match.group(1)) * _UNITS[match.group(2)]
    if duration > MAX_LIFETIME:
        raise InvalidInput(f"a key lives at most {MAX_LIFETIME.days} days; got {text!r}")
    return duration


def create_api_key(
    session: Session,
    name: str,
    scopes: Sequence[str],
    now: datetime | None = None,
    expires_in: timedelta | None = None,
) -> str:
    """Create a key named ``name`` with ``scopes`` (subset of recommend/erase/admin), valid for
    ``expires_in`` (None: until revoked); returns the plaintext, shown once.  Flushes only."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(f"scopes must be a non-empty subset of {list(SCOPES)}; unknown: {unknown}")
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput("a key's lifetime must be positive")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    when = now or utcnow()
    expires_at = None if expires_in is None else when + expires_in
    key = ApiKey(
        name=name,
        prefix=plaintext[:12],
        key_hash=_hash(plaintext),
        scopes=sorted(set(scopes)),
        created_at=when,
        expires_at=expires_at,
    )
    audit_repo.add_key(session, key)
    expiry = None if expires_at is None else expires_at.isoformat()
    audit_repo.record(
        session,
        when,
        "system",
        "api_key.created",
        "api_key",
        str(key.id),
        name=name,
        scopes=key.scopes,
        expires_at=expiry,
    )
    return plaintext


@dataclass(frozen=True)
class _Verified:
    at: float  # the clock's reading when the row was read
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    def row(self, key_hash: str) -> ApiKey:
        """A fresh, unattached ApiKey: callers read it, each its own copy."""
        return ApiKey(
            id=self.id,
            name=self.name,
            prefix=self.prefix,
            key_hash=key_hash,
            scopes=list(self.scopes),
            created_at=self.created_at,
            expires_at=self.expires_at,
            last_used_at=self.last_used_at,
            revoked_at=None,
        )


@dataclass
class VerifiedKeys:
    """Keys read from the database in the last ``seconds``, by hash: a request presenting one is
    authenticated without a SELECT.  The bound: a key revoked elsewhere (the CLI, another API process)
    is refused at most ``seconds`` later; ``forget`` (a revocation in this process) refuses it at once.
    Expiry and scopes are checked on every request; ``last_used_at`` is still written once a minute.
    ``seconds=0`` turns it off.  At most ``max_keys`` entries (the oldest go first)."""

    seconds: float = 2.0
    max_keys: int = 1024
    clock: Callable[[], float] = time.monotonic
    _keys: dict[str, _Verified] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key_hash: str) -> _Verified | None:
        if self.seconds <= 0:
            return None
        with self._lock:
            entry = self._keys.get(key_hash)
            if entry is not None and self.clock() - entry.at >= self.seconds:
                del self._keys[key_hash]
                return None
            return entry

    def remember(self, key: ApiKey) -> None:
        if self.seconds <= 0:
            return
        entry = _Verified(
            self.clock(),
            key.id,
            key.name,
            key.prefix,
            tuple(key.scopes),
            key.created_at,
            key.expires_at,
            key.last_used_at,
        )
        with self._lock:
            self._keys.pop(key.key_hash, None)  # re-inserted last: dict order is age
            self._keys[key.key_hash] = entry
            while len(self._keys) > self.max_keys:
                del self._keys[next(iter(self._keys))]

    def forget(self, key_id: int) -> None:
        with self._lock:
            for key_hash in [h for h, entry in self._keys.items() if entry.id == key_id]:
                del self._keys[key_hash]


def authenticate(
    session: Session,
    plaintext: str,
    required_scope: str | None = None,
    now: datetime | None = None,
    verified: VerifiedKeys | None = None,
) -> ApiKey:
    """The key row for ``plaintext``; raises Unauthorized (unknown/revoked), ApiKeyExpired (past its
    expiry) or Forbidden (scope missing).  Records when the key was last used (to
    ``LAST_USED_RESOLUTION``); flushes only.  With ``verified``, a key read there less than its
    ``seconds`` ago is not read again (an unattached copy of the row is returned)."""
    key_hash = _hash(plaintext) if plaintext else ""
    when = now or utcnow()
    cached = verified.get(key_hash) if verified is not None and plaintext else None
    if (
        cached is not None
        and cached.last_used_at is not None
        and when - cached.last_used_at < LAST_USED_RESOLUTION
    ):
        key = cached.row(key_hash)
    else:
        key, marked = _read_and_mark_used(session, key_hash, when)
        # not a row whose last use this request just wrote: that write is undone if the request fails
        if verified is not None and not marked:
            verified.remember(key)
    if key.expires_at is not None and when >= key.expires_at:
        raise ApiKeyExpired(
            f"this API key expired at {key.expires_at.isoformat(timespec='seconds')}; "
            "ask an admin for a new one (`e2u apikey create`)"
        )
    if required_scope is not None and required_scope not in key.scopes:
        raise Forbidden(f"this API key lacks the {required_scope!r} scope", scopes=key.scopes)
    return key


def _read_and_mark_used(session: Session, key_hash: str, when: datetime) -> tuple[ApiKey, bool]:
    """The valid row for ``key_hash`` and whether its ``last_used_at`` was written now."""
    key = audit_repo.key_by_hash(session, key_hash) if key_hash else None
    if key is None or key.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key")
    expired = key.expires_at is not None and when >= key.expires_at
    if not expired and (key.last_used_at is None or when - key.last_used_at >= LAST_USED_RESOLUTION):
        key.last_used_at = when
        session.flush()
        return key, True
    return key, False


def key_of(session: Session, plaintext: str) -> ApiKey:
    """The row of a key just created (its expiry, its id), without authenticating with it."""
    key = audit_repo.key_by_hash(session, _hash(plaintext))
    if key is None:
        raise NotFound("no such API key")
    return key


def list_api_keys(session: Session) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first (rows hold the hash only, never the key)."""
    return audit_repo.list_keys(session)


def revoke_api_key(session: Session, key_id: int, actor: str, now: datetime | None = None) -> ApiKey:
    """Revoke a key: it authenticates no more.  Idempotent (the first revocation time stays).  Flushes
    only."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = now or utcnow()
        audit_repo.record(
            session, key.revoked_at, actor, "api_key.revoked", "api_key", str(key.id), name=key.name
        )
        session.flush()
    return key
