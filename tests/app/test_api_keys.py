"""API keys can be listed (admin; never the key itself), revoked (at once through the API, within the
verified-key bound elsewhere), record when they were last used; failed authentications are rate-limited
per client address (429 + Retry-After)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, select
from typer.testing import CliRunner

from app.cli import app as cli
from app.deps import AuthFailureLimiter
from core.db.models import ApiKey, AuditEntry, utcnow
from core.services.api_keys import VerifiedKeys, authenticate, create_api_key, revoke_api_key
from core.services.errors import ApiKeyExpired, Forbidden, Unauthorized
from tests.app.conftest import Env


def test_admin_lists_keys_without_their_secrets_and_with_last_use(api_env: Env) -> None:
    assert api_env.client.get("/v1/admin/api-keys", headers=api_env.keys.header("erase")).status_code == 403
    assert api_env.client.get("/v1/erasure-requests", headers=api_env.keys.header("erase")).status_code == 200
    listed = api_env.client.get("/v1/admin/api-keys", headers=api_env.keys.header("admin"))
    assert listed.status_code == 200, listed.text
    keys = {k["name"]: k for k in listed.json()}
    assert set(keys) == {"backend", "privacy", "ops", "root"}
    secrets = [api_env.keys.recommend, api_env.keys.erase, api_env.keys.admin, api_env.keys.all]
    assert not any(secret in listed.text for secret in secrets)
    assert all("hash" not in field for k in keys.values() for field in k)
    assert api_env.keys.admin.startswith(keys["ops"]["prefix"])
    assert keys["ops"]["last_used_at"] is not None  # this very call; "privacy" answered a 200 above
    assert keys["privacy"]["last_used_at"] is not None and keys["backend"]["last_used_at"] is None
    assert keys["ops"]["scopes"] == ["admin"] and keys["ops"]["revoked_at"] is None


def test_a_revoked_key_authenticates_no_more(api_env: Env) -> None:
    admin = api_env.keys.header("admin")
    keys = {k["name"]: k["id"] for k in api_env.client.get("/v1/admin/api-keys", headers=admin).json()}
    for _ in range(2):  # the second read puts the key among this process's verified keys
        assert (
            api_env.client.get("/v1/erasure-requests", headers=api_env.keys.header("erase")).status_code
            == 200
        )
    revoked = api_env.client.post(f"/v1/admin/api-keys/{keys['privacy']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None, revoked.text
    again = api_env.client.post(f"/v1/admin/api-keys/{keys['privacy']}/revoke", headers=admin)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # idempotent
    refused = api_env.client.get("/v1/erasure-requests", headers=api_env.keys.header("erase"))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"
    missing = api_env.client.post("/v1/admin/api-keys/999/revoke", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    with api_env.sessions() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.subject_id == str(keys["privacy"]))
        )
        assert list(actions).count("api_key.revoked") == 1


def test_failed_authentications_are_rate_limited_per_address(api_env: Env) -> None:
    clock = [1000.0]
    limiter = AuthFailureLimiter(limit=3, window_seconds=60, clock=lambda: clock[0])
    api_env.client.app.state.auth_failures = limiter  # type: ignore[attr-defined]
    good = api_env.keys.header("recommend")
    assert (
        api_env.client.get("/v1/erasure-requests", headers=good).status_code == 403
    )  # a wrong scope is no failure
    for guess in ("e2u_a", "e2u_b"):
        assert api_env.client.get("/v1/erasure-requests", headers={"X-API-Key": guess}).status_code == 401
    assert api_env.client.get("/v1/erasure-requests").status_code == 401  # no key at all counts too
    clock[0] += 15
    limited = api_env.client.get("/v1/erasure-requests", headers={"X-API-Key": "e2u_c"})
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "too_many_requests"
    assert limited.headers["Retry-After"] == "45"
    # even the right key waits: a guesser cannot tell a hit from a miss while limited
    erase = api_env.keys.header("erase")
    assert api_env.client.get("/v1/erasure-requests", headers=erase).status_code == 429
    assert limiter.retry_after("another-address") is None  # per address
    clock[0] += 46  # the failures leave the window
    assert api_env.client.get("/v1/erasure-requests", headers=erase).status_code == 200


def test_limiter_forgets_the_stalest_addresses_first() -> None:
    limiter = AuthFailureLimiter(limit=1, window_seconds=60, max_addresses=2, clock=lambda: 0.0)
    for address in ("a", "b", "a", "c"):
        limiter.failed(address)
    assert limiter.retry_after("b") is None and limiter.retry_after("a") == 60 == limiter.retry_after("c")


def test_last_use_is_recorded_to_the_minute(api_env: Env) -> None:
    with api_env.sessions() as session:
        plaintext = create_api_key(session, "job", ["recommend"])
        start = utcnow()
        key = authenticate(session, plaintext, now=start)
        assert key.last_used_at == start
        authenticate(session, plaintext, now=start + timedelta(seconds=30))
        assert key.last_used_at == start  # one write a minute, not one per request
        authenticate(session, plaintext, now=start + timedelta(minutes=2))
        assert key.last_used_at == start + timedelta(minutes=2)


def test_apikey_list_and_revoke_commands(api_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2U_HOME", str(api_env.home))
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")
    monkeypatch.delenv("E2U_DATABASE_URL", raising=False)
    listed = CliRunner().invoke(cli, ["apikey", "list"])
    assert listed.exit_code == 0, listed.output
    assert "privacy" in listed.output and api_env.keys.erase not in listed.output
    with api_env.sessions() as session:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.name == "privacy"))
    revoked = CliRunner().invoke(cli, ["apikey", "revoke", str(key_id)])
    assert revoked.exit_code == 0 and f"revoked API key {key_id} (privacy)" in revoked.output, revoked.output
    assert api_env.client.get("/v1/erasure-requests", headers=api_env.keys.header("erase")).status_code == 401
    missing = CliRunner().invoke(cli, ["apikey", "revoke", "999"])
    assert missing.exit_code == 2 and "API key 999 not found" in missing.output


def test_a_verified_key_is_read_again_within_the_bound(api_env: Env) -> None:
    """One SELECT per key per ``seconds``, not per request; a revocation made elsewhere (another
    process: here a session of its own) is honoured once the bound has passed."""
    clock = [100.0]
    verified = VerifiedKeys(seconds=2.0, clock=lambda: clock[0])
    with api_env.sessions() as session:
        plaintext = create_api_key(session, "job", ["erase"])
        session.commit()
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    engine = api_env.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", count)
    try:
        with api_env.sessions() as session:
            first = authenticate(session, plaintext, "erase", verified=verified)  # writes its last use
            authenticate(session, plaintext, "erase", verified=verified)  # read again, now remembered
            reads = len(statements)
            again = authenticate(session, plaintext, "erase", verified=verified)
            assert len(statements) == reads and again.id == first.id and again.scopes == ["erase"]
            with pytest.raises(Forbidden):  # scopes are checked on every request
                authenticate(session, plaintext, "admin", verified=verified)
        with api_env.sessions() as other:
            revoke_api_key(other, first.id, "ops")
            other.commit()
        with api_env.sessions() as session:
            clock[0] += 1.9
            assert authenticate(session, plaintext, verified=verified).id == first.id  # within the bound
            clock[0] += 0.1
            with pytest.raises(Unauthorized):
                authenticate(session, plaintext, verified=verified)
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_expiry_and_last_use_are_honoured_for_a_verified_key(api_env: Env) -> None:
    verified = VerifiedKeys(seconds=3600.0)
    with api_env.sessions() as session:
        plaintext = create_api_key(session, "job", ["recommend"], expires_in=timedelta(seconds=30))
        start = utcnow()
        key = authenticate(session, plaintext, now=start, verified=verified)
        for seconds in (10, 20):  # read again, then remembered
            authenticate(session, plaintext, now=start + timedelta(seconds=seconds), verified=verified)
        with pytest.raises(ApiKeyExpired):
            authenticate(session, plaintext, now=start + timedelta(seconds=31), verified=verified)
        other = create_api_key(session, "other", ["recommend"])
        for seconds in (0, 10, 20):
            authenticate(session, other, now=start + timedelta(seconds=seconds), verified=verified)
        again = authenticate(session, other, now=start + timedelta(minutes=2), verified=verified)
        assert again.last_used_at == start + timedelta(minutes=2)  # the minute's write still happens
    assert key.last_used_at == start


def test_a_filing_with_a_verified_key_reads_no_key(api_env: Env) -> None:
    """Through the API, an erasure request with a key read a moment ago costs its two INSERTs and no
    SELECT of the key (before the verified keys: three statements)."""
    erase = api_env.keys.header("erase")
    for _ in range(2):  # the key's last use written, then read again and remembered
        assert api_env.client.get("/v1/erasure-requests", headers=erase).status_code == 200
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(" ".join(statement.split()[:3]))

    event.listen(Engine, "before_cursor_execute", count)
    try:
        filed = api_env.client.post("/v1/erasure-requests", json={"user_id": "u1"}, headers=erase)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert filed.status_code == 201, filed.text
    assert not any("api_keys" in s for s in statements), statements
    assert [s.split()[0] for s in statements] == ["INSERT", "INSERT"], statements
