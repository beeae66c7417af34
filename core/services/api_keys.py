"""API keys with scopes; only the sha256 of a key is stored."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
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


def authenticate(
    session: Session, plaintext: str, required_scope: str | None = None, now: datetime | None = None
) -> ApiKey:
    """The key row for ``plaintext``; raises Unauthorized (unknown/revoked), ApiKeyExpired (past its
    expiry) or Forbidden (scope missing).  Records when the key was last used (to
    ``LAST_USED_RESOLUTION``); flushes only."""
    key = audit_repo.key_by_hash(session, _hash(plaintext)) if plaintext else None
    if key is None or key.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key")
    when = now or utcnow()
    if key.expires_at is not None and when >= key.expires_at:
        raise ApiKeyExpired(
            f"this API key expired at {key.expires_at.isoformat(timespec='seconds')}; "
            "ask an admin for a new one (`e2u apikey create`)"
        )
    if key.last_used_at is None or when - key.last_used_at >= LAST_USED_RESOLUTION:
        key.last_used_at = when
        session.flush()
    if required_scope is not None and required_scope not in key.scopes:
        raise Forbidden(f"this API key lacks the {required_scope!r} scope", scopes=key.scopes)
    return key


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
