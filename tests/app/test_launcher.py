"""The embedded launcher's first start in development: a signing key of its own under ``home/keys`` and
an all-scope API key written to a file only its owner can read; no key is printed.  Production makes
neither (its secrets come from files the operator provides)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from app.cli import service
from app.launcher import initialise
from app.settings import EmbeddedSettings
from core.db.engine import session_factory
from core.ml.data import PreparedData, save_prepared
from core.ml.model import ModelConfig
from core.services.api_keys import authenticate
from core.signing import SigningKey
from tests.adapters import save_random_adapter


def _unexpected() -> None:
    raise AssertionError("prepared data and adapter v1 exist: nothing to make")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("E2U_ENVIRONMENT", "E2U_SIGNING_KEY_FILE", "E2U_CERTIFICATE_SALT", "E2U_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setenv("E2U_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("E2U_BASE_MODEL", "tiny")
    return tmp_path / "home"


def test_first_development_start_writes_keys_to_files_not_the_terminal(
    home: Path, small_data: PreparedData, tiny_config: ModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = EmbeddedSettings()
    save_prepared(small_data, settings.data_dir)
    save_random_adapter(tiny_config, settings.adapters_dir / "v1", seed=1)
    report = initialise(settings, _unexpected, _unexpected)
    assert report.dev_api_key_file == home / "dev-admin-key"
    assert report.dev_api_key_file.stat().st_mode & 0o777 == 0o600
    assert report.signing_key_id == SigningKey.load(home / "keys" / "signing-key.pem").kid
    plaintext = report.dev_api_key_file.read_text().strip()
    with session_factory(settings.database_url_resolved)() as session:
        assert set(authenticate(session, plaintext).scopes) == {"admin", "erase", "recommend"}
    again = initialise(settings, _unexpected, _unexpected)  # a later start makes no second key
    assert again.dev_api_key_file is None and again.signing_key_id == report.signing_key_id

    # what `e2u init` prints: where the key is, never the key
    monkeypatch.setattr(service, "initialise", lambda *args, **kwargs: report)
    printed = CliRunner().invoke(cli, ["init"])
    assert printed.exit_code == 0, printed.output
    assert str(report.dev_api_key_file) in printed.output and plaintext not in printed.output
    assert "environment: development" in printed.output


def test_production_refuses_to_start_without_its_secrets(home: Path) -> None:
    result = CliRunner().invoke(cli, ["init"], env={"E2U_ENVIRONMENT": "production"})
    assert result.exit_code != 0 and "E2U_CERTIFICATE_SALT" in str(result.exception)
    assert not (home / "keys").exists()
