"""Bringing your own adapter through the edges: ``e2u model import-adapter PATH`` and
``POST /v1/admin/adapters/import`` register a plain-PEFT adapter as the first version, which then serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app as cli
from app.main import create_app
from app.settings import ApiSettings
from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.ml.data import PreparedData, load_prepared, save_prepared
from core.ml.model import adapter_sha256
from core.services import registry
from core.services.api_keys import create_api_key
from tests.byo import train_plain_peft
from tests.conftest import MODELS_DIR


@pytest.fixture(scope="module")
def peft_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_plain_peft(tmp_path_factory.mktemp("customer") / "lora")


@pytest.fixture
def home(tmp_path: Path, small_data: PreparedData, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty service home: prepared data, the tiny model, a migrated database with no version."""
    (tmp_path / "models").symlink_to(MODELS_DIR)
    save_prepared(small_data, tmp_path / "data" / "default")
    for name, value in {
        "E2U_HOME": str(tmp_path),
        "E2U_ENVIRONMENT": "development",
        "E2U_BASE_MODEL": "tiny",
        "E2U_HISTORY_LEN": "3",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def test_cli_imports_the_adapter_as_the_first_version(home: Path, peft_folder: Path) -> None:
    result = CliRunner().invoke(cli, ["model", "import-adapter", str(peft_folder)])
    assert result.exit_code == 0, result.output
    version_id = adapter_sha256(peft_folder)[:16]
    assert f"imported {peft_folder} as version {version_id} (active, root of the lineage" in result.output
    assert "test AUC" in result.output and "95% CI" in result.output
    settings = ApiSettings()
    with session_factory(settings.database_url_resolved)() as session:
        active = registry.active_adapter(session)
        assert active is not None and active.version_id == version_id
        assert registry.get_version(session, version_id).config["kind"] == "imported"
    again = CliRunner().invoke(cli, ["model", "import-adapter", str(peft_folder)])
    assert again.exit_code == 2 and "can only be the first version" in again.output


def test_cli_names_what_does_not_fit(home: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["model", "import-adapter", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a PEFT adapter folder" in result.output


@pytest.fixture
def client(home: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = ApiSettings(adapter_poll_seconds=0.5)
    upgrade(settings.database_url_resolved)
    with session_factory(settings.database_url_resolved)() as session:
        key = create_api_key(session, "ops", ["admin", "recommend"])
        session.commit()
    with TestClient(create_app(settings)) as test_client:
        yield test_client, {"X-API-Key": key}


def test_admin_endpoint_imports_and_the_api_serves_it(
    client: tuple[TestClient, dict[str, str]], peft_folder: Path, tmp_path: Path
) -> None:
    http, headers = client
    misfit = http.post("/v1/admin/adapters/import", json={"path": str(tmp_path)}, headers=headers)
    assert misfit.status_code == 422 and "not a PEFT adapter folder" in misfit.json()["error"]["message"]
    created = http.post("/v1/admin/adapters/import", json={"path": str(peft_folder)}, headers=headers)
    assert created.status_code == 201, created.text
    version = created.json()
    assert version["active"] and version["lineage"] == [version["id"]] and version["parent_id"] is None
    assert version["config"]["kind"] == "imported" and version["metrics"]["evaluation"]["split"] == "test"
    served = http.post("/v1/recommendations", json={"user_id": "u2", "k": 2}, headers=headers)
    assert served.status_code == 200 and served.json()["adapter_version"] == version["id"]
    again = http.post("/v1/admin/adapters/import", json={"path": str(peft_folder)}, headers=headers)
    assert again.status_code == 409


def test_data_prepare_reads_clicks_as_implicit_feedback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2U_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")
    (tmp_path / "clicks.csv").write_text(
        "user,item,rating,timestamp\n"
        + "".join(f"u{u},i{i},1,{100 * u + i}\n" for u in range(3) for i in range(4))
    )
    (tmp_path / "items.csv").write_text("item,title\n" + "".join(f"i{i},Product {i}\n" for i in range(9)))
    options = ["--ratings", str(tmp_path / "clicks.csv"), "--items", str(tmp_path / "items.csv")]
    result = CliRunner().invoke(
        cli, ["data", "prepare", *options, "--feedback", "implicit", "--negatives", "1", "--history-len", "2"]
    )
    assert result.exit_code == 0, result.output
    samples = load_prepared(tmp_path / "home" / "data" / "default").samples
    assert (samples["label"] == 1).sum() == 12 and (samples["label"] == 0).sum() == 12
    refused = CliRunner().invoke(cli, ["data", "prepare", *options, "--feedback", "stars"])
    assert refused.exit_code == 2 and "feedback kind must be one of" in refused.output
