"""Settings fail closed: production is the default, and it refuses to start without a signing key file
and a certificate salt of its own; development (asked for by the embedded launcher only) makes its key on
first use; an empty salt passes nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import ApiSettings, EmbeddedSettings
from core.data_keys import create_kek_file
from core.settings import DEV_CERTIFICATE_SALT, Settings
from core.signing import SigningKey


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "E2U_ENVIRONMENT",
        "E2U_SIGNING_KEY_FILE",
        "E2U_CERTIFICATE_SALT",
        "E2U_RETIRED_KEYS_DIR",
        "E2U_SECRETS_DIR",
        "E2U_DATABASE_URL",
        "E2U_DATABASE_PASSWORD",
        "E2U_DATA_KEK_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setenv("E2U_HOME", str(tmp_path / "home"))


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing-key.pem"
    path.write_bytes(SigningKey.generate().to_pem())
    return path


def test_production_is_the_default_and_refuses_missing_secrets(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="E2U_CERTIFICATE_SALT must be set"):
        Settings()
    assert Settings.model_fields["environment"].default == "production"
    with pytest.raises(ValidationError, match="E2U_SIGNING_KEY_FILE must name"):
        Settings(certificate_salt="pepper")
    with pytest.raises(ValidationError, match="E2U_SIGNING_KEY_FILE: cannot read"):
        Settings(certificate_salt="pepper", signing_key_file=tmp_path / "missing.pem")
    (tmp_path / "not-a-key.pem").write_text("dev-only-signing-key-change-me")
    with pytest.raises(ValidationError, match="E2U_SIGNING_KEY_FILE: cannot read"):
        Settings(certificate_salt="pepper", signing_key_file=tmp_path / "not-a-key.pem")
    with pytest.raises(ValidationError, match="E2U_CERTIFICATE_SALT must be set"):
        Settings(certificate_salt=DEV_CERTIFICATE_SALT, signing_key_file=_key_file(tmp_path))


def test_an_empty_salt_passes_nowhere(tmp_path: Path) -> None:
    for environment in ("development", "production"):
        with pytest.raises(ValidationError, match="E2U_CERTIFICATE_SALT must not be empty"):
            Settings(environment=environment, certificate_salt="  ", signing_key_file=_key_file(tmp_path))


def test_production_with_its_own_secrets_starts_and_never_creates_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key_file(tmp_path)
    monkeypatch.setenv("E2U_SIGNING_KEY_FILE", str(key))
    monkeypatch.setenv("E2U_CERTIFICATE_SALT", "pepper")
    kek = tmp_path / "data-kek"
    kek_id = create_kek_file(kek)
    monkeypatch.setenv("E2U_DATA_KEK_FILE", str(kek))
    settings = ApiSettings()
    assert settings.keyring().active_kek_id == kek_id
    assert settings.environment == "production"
    assert settings.signing_keys.active().kid == SigningKey.load(key).kid
    assert not settings.signing_keys.create_missing
    # the embedded launcher's default yields to an explicit production
    monkeypatch.setenv("E2U_ENVIRONMENT", "production")
    assert EmbeddedSettings().environment == "production"


def test_production_refuses_to_start_without_a_key_encryption_key(tmp_path: Path) -> None:
    secrets = {"certificate_salt": "pepper", "signing_key_file": _key_file(tmp_path)}
    with pytest.raises(ValidationError, match="E2U_DATA_KEK_FILE must name"):
        Settings(**secrets)
    with pytest.raises(ValidationError, match="E2U_DATA_KEK_FILE: no key-encryption key"):
        Settings(**secrets, data_kek_file=tmp_path / "missing")
    (tmp_path / "short").write_text("c2hvcnQ=\n")
    with pytest.raises(ValidationError, match="has 32 bytes, got 5"):
        Settings(**secrets, data_kek_file=tmp_path / "short")
    assert not (tmp_path / "missing").exists()  # production never makes one


def test_development_is_what_the_embedded_launcher_asks_for(tmp_path: Path) -> None:
    settings = EmbeddedSettings()
    assert settings.environment == "development"
    path = tmp_path / "home" / "keys" / "signing-key.pem"
    assert not path.exists()
    kid = settings.signing_keys.active().kid  # a key of its own, made on first use, never a published one
    assert path.stat().st_mode & 0o777 == 0o600
    assert EmbeddedSettings().signing_keys.active().kid == kid
    assert SigningKey.load(path).kid == kid
    kek = tmp_path / "home" / "keys" / "data-kek"
    assert settings.keyring().active_kek_id == EmbeddedSettings().keyring().active_kek_id  # made once
    assert kek.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- secrets from files (docker secrets)


def test_secrets_come_from_files_and_the_environment_still_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file per setting in E2U_SECRETS_DIR (compose mounts them under /run/secrets): the salt and the
    database password, whose file replaces the URL's password; a variable set outright wins."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "e2u_certificate_salt").write_text("salt-from-a-file\n")
    (secrets / "e2u_database_password").write_text("p@ss:w/rd\n")
    monkeypatch.setenv("E2U_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("E2U_SIGNING_KEY_FILE", str(_key_file(tmp_path)))
    monkeypatch.setenv("E2U_DATABASE_URL", "postgresql+psycopg://e2u:old@db:5432/e2u")
    create_kek_file(tmp_path / "data-kek")
    monkeypatch.setenv("E2U_DATA_KEK_FILE", str(tmp_path / "data-kek"))
    settings = Settings()
    assert settings.certificate_salt == "salt-from-a-file"
    assert settings.database_url_resolved == "postgresql+psycopg://e2u:p%40ss%3Aw%2Frd@db:5432/e2u"
    assert "p@ss" not in repr(settings)  # a SecretStr: never printed
    monkeypatch.setenv("E2U_CERTIFICATE_SALT", "salt-from-the-environment")
    assert Settings().certificate_salt == "salt-from-the-environment"


def test_production_refuses_to_start_without_its_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No salt file, no salt variable: production refuses, as with no secrets folder at all."""
    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("E2U_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("E2U_SIGNING_KEY_FILE", str(_key_file(tmp_path)))
    with pytest.raises(ValidationError, match="E2U_CERTIFICATE_SALT must be set"):
        Settings()
    monkeypatch.setenv("E2U_SECRETS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ValidationError, match="E2U_CERTIFICATE_SALT must be set"):
        Settings()


def test_without_a_password_file_the_database_url_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2U_DATABASE_URL", "postgresql+psycopg://e2u:inline@db:5432/e2u")
    assert Settings(environment="development").database_url_resolved.endswith("e2u:inline@db:5432/e2u")
