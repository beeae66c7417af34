"""The published signing keys: ``GET /.well-known/jwks.json`` answers without an API key, may be cached,
lists the active key and every retired one (never a private member), and follows a rotation at once;
``e2u keys rotate`` is the rotation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from core.signing import KeyStore, SigningKey
from tests.app.conftest import Env


def _store(env: Env) -> KeyStore:
    return KeyStore(env.home / "keys" / "signing-key.pem", env.home / "keys" / "retired", create_missing=True)


def test_jwks_is_public_cacheable_and_keeps_retired_keys(api_env: Env) -> None:
    first = api_env.client.get("/.well-known/jwks.json")  # no API key
    assert first.status_code == 200 and first.headers["cache-control"] == "public, max-age=300"
    [active] = first.json()["keys"]
    assert active == SigningKey.load(_store(api_env).active_path).jwk  # created on first use (development)
    assert active["kty"] == "OKP" and active["crv"] == "Ed25519" and "d" not in active

    old_kid, new_kid = _store(api_env).rotate()
    after = api_env.client.get("/.well-known/jwks.json").json()["keys"]
    assert old_kid == active["kid"] and [k["kid"] for k in after] == [new_kid, old_kid]
    assert all("d" not in k for k in after)


def test_keys_rotate_command(api_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2U_HOME", str(api_env.home))
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")
    before = _store(api_env).active().kid
    result = CliRunner().invoke(cli, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert f"retired key: {before}" in result.output
    assert (api_env.home / "keys" / "retired" / f"{before}.jwk.json").exists()
    printed = CliRunner().invoke(cli, ["keys", "jwks"])
    assert [k["kid"] for k in json.loads(printed.output)["keys"]][1] == before
    published = api_env.client.get("/.well-known/jwks.json").json()
    assert published == json.loads(printed.output)
