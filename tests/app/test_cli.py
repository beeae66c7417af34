"""The ``e2u`` command line through typer's CliRunner: ``e2u data import`` writes into the database named
by the settings (E2U_HOME's embedded SQLite here), all or nothing; refusals exit 2 with their own message
(a usage error, such as a misspelt option, also exits 2: the message tells them apart); ``e2u init``
prepares and trains through the workflows with the quick-start recipe."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app, data, model, service
from app.launcher import InitReport
from core.db.engine import make_engine, session_factory
from core.db.migrate import upgrade
from core.db.models import Interaction
from core.ml.data import PreparedData
from core.ml.model import LoraSpec
from core.ml.training import TrainConfig
from core.services.bootstrap import import_prepared
from core.settings import Settings
from tests.adapters import register_placeholder_version


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_data: PreparedData) -> Path:
    """E2U_HOME with a migrated SQLite registry holding the synthetic data set and a registered v1."""
    monkeypatch.setenv("E2U_HOME", str(tmp_path))
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # production needs a signing key file and salt
    monkeypatch.delenv("E2U_DATABASE_URL", raising=False)
    url = f"sqlite:///{(tmp_path / 'e2u.sqlite').resolve()}"
    upgrade(url)
    keyring = Settings().keyring()  # the CLI's own KEK (home/keys/data-kek, made in development)
    with session_factory(url, keyring)() as session:
        import_prepared(session, small_data)
        register_placeholder_version(session)
    return tmp_path


def _assert_refused(result: Result, message: str) -> None:
    """Exit 2 with the command's own message, not a usage error (which exits 2 too)."""
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "No such option" not in result.output and "Usage:" not in result.output


def _interactions(home: Path) -> int:
    engine = make_engine(f"sqlite:///{home / 'e2u.sqlite'}")
    with session_factory(engine)() as session:
        count = session.scalar(select(func.count(Interaction.id))) or 0
    engine.dispose()
    return count


def test_data_import(home: Path) -> None:
    (home / "items.csv").write_text("item,title\nn1,New Film\n")
    (home / "good.csv").write_text("user,item,rating,timestamp\nnu1,n1,5,100\nnu2,n1,2,100\n")
    (home / "bad.csv").write_text("user,item,rating,timestamp\nnu1,n1,5,100\nnu2,n1,2,later\n")
    before = _interactions(home)
    runner = CliRunner()

    bad = runner.invoke(
        app, ["data", "import", "--ratings", str(home / "bad.csv"), "--items", str(home / "items.csv")]
    )
    _assert_refused(bad, "bad.csv: line 3, column 'timestamp': not a unix time")
    assert _interactions(home) == before

    good = runner.invoke(
        app, ["data", "import", "--ratings", str(home / "good.csv"), "--items", str(home / "items.csv")]
    )
    assert good.exit_code == 0, good.output
    assert "imported 2 ratings of 2 users; items: 1 added" in good.output
    assert _interactions(home) == before + 2


def test_a_misspelt_option_is_a_usage_error_not_a_refusal(home: Path) -> None:
    result = CliRunner().invoke(app, ["data", "import", "--rating", "r.csv", "--items", "i.csv"])
    assert result.exit_code == 2
    assert "No such option" in result.output and "--rating" in result.output


def test_apikey_create_refuses_an_unknown_scope(home: Path) -> None:
    result = CliRunner().invoke(app, ["apikey", "create", "--name", "ops", "--scopes", "admin,root"])
    _assert_refused(result, "unknown: ['root']")
    created = CliRunner().invoke(app, ["apikey", "create", "--name", "ops", "--scopes", "admin"])
    assert created.exit_code == 0 and created.output.startswith("e2u_"), created.output


def test_certificate_verify_refuses_an_unreadable_file(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["certificate", "verify", str(tmp_path / "none.json")])
    _assert_refused(missing, "error: cannot read")
    (tmp_path / "list.json").write_text("[1, 2]")
    not_object = CliRunner().invoke(app, ["certificate", "verify", str(tmp_path / "list.json")])
    _assert_refused(not_object, "is not a JSON object")


def test_the_quick_start_recipe() -> None:
    # what `e2u init` trained with when it called the `train` command with positional values
    old = TrainConfig(
        lora=LoraSpec(r=8, alpha=16),
        learning_rate=1e-3,
        batch_size=8,
        max_steps=60,
        max_samples=None,
        eval_every=20,
        valid_samples=128,
        seed=0,
    )
    assert TrainConfig.quick(60) == old
    assert TrainConfig.quick(12).eval_every == 10


def test_init_prepares_and_trains_through_the_workflows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_data: PreparedData
) -> None:
    monkeypatch.setenv("E2U_HOME", str(tmp_path))
    monkeypatch.setenv("E2U_BASE_MODEL", "tiny")
    monkeypatch.setenv("E2U_HISTORY_LEN", "3")
    calls: dict[str, Any] = {}

    def fake_initialise(settings: Any, prepare_data: Any, train_v1: Any) -> InitReport:
        prepare_data()
        train_v1()
        return InitReport("v1-x", imported_interactions=0, signing_key_id="k", dev_api_key_file=None)

    def fake_prepare(folder: Path, config: Any, *csvs: Any, feedback: Any) -> tuple[PreparedData, str]:
        calls["prepare"] = (folder, config.history_len, csvs, feedback)
        return small_data, "0" * 64

    def fake_train(
        model_config: Any, prepared: Any, config: TrainConfig, folder: Path, **options: Any
    ) -> Any:
        calls["train"] = (model_config.base, prepared, config, folder)
        return _trained(steps=30)

    monkeypatch.setattr(service, "initialise", fake_initialise)
    monkeypatch.setattr(data, "prepare_data", fake_prepare)
    monkeypatch.setattr(model, "load_prepared", lambda folder: f"data from {folder}")
    monkeypatch.setattr(model, "train_first_adapter", fake_train)
    result = CliRunner().invoke(app, ["init", "--quick-steps", "30"])
    assert result.exit_code == 0, result.output
    data_dir = tmp_path / "data" / "default"
    assert calls["prepare"] == (data_dir, 3, (None, None, None), None)  # explicit ratings
    v1 = tmp_path / "adapters" / "v1"
    assert calls["train"] == ("tiny", f"data from {data_dir}", TrainConfig.quick(30), v1)
    assert f"adapter saved to {v1}" in result.output and "active adapter version: v1-x" in result.output


def _trained(steps: int) -> SimpleNamespace:
    """What ``train_first_adapter`` returns, as far as the CLI reads it."""
    result = SimpleNamespace(
        steps=steps,
        samples_seen=8 * steps,
        stopped_by="max_steps",
        resumed_from_step=0,
        best_valid_auc=0.5,
        seconds=1.0,
    )
    return SimpleNamespace(sha256="1" * 64, result=result)


def _fake_workflows(monkeypatch: pytest.MonkeyPatch, small_data: PreparedData) -> dict[str, Any]:
    """Record the folders that prepare and train would read and write."""
    calls: dict[str, Any] = {}

    def fake_prepare(folder: Path, config: Any, *csvs: Any, **options: Any) -> tuple[PreparedData, str]:
        calls["prepare"] = folder
        return small_data, "0" * 64

    def fake_train(
        model_config: Any, prepared: Any, config: TrainConfig, folder: Path, **options: Any
    ) -> Any:
        calls["train"] = (prepared, folder)
        return _trained(steps=1)

    monkeypatch.setattr(data, "prepare_data", fake_prepare)
    monkeypatch.setattr(model, "load_prepared", lambda folder: f"data from {folder}")
    monkeypatch.setattr(model, "train_first_adapter", fake_train)
    return calls


def test_prepare_and_train_refuse_on_an_initialised_registry(
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    small_data: PreparedData,
) -> None:
    calls = _fake_workflows(monkeypatch, small_data)
    prepare = CliRunner().invoke(app, ["data", "prepare", "--ratings", "r.csv", "--items", "i.csv"])
    _assert_refused(prepare, "refused: the registry is initialised")
    _assert_refused(CliRunner().invoke(app, ["train"]), "refused: the registry is initialised")
    inside = ["--data-dir", str(home / "data" / "default"), "--out", str(home / "adapters" / "v1")]
    _assert_refused(CliRunner().invoke(app, ["train", *inside]), "--data-dir, and --out")
    separate = tmp_path_factory.mktemp("separate")
    half = ["--data-dir", str(separate / "data"), "--out", str(home / "adapters" / "v9")]
    _assert_refused(CliRunner().invoke(app, ["train", *half]), "refused")  # the output still in the store
    assert calls == {}
    # a separate folder: the service's files stay untouched
    result = CliRunner().invoke(app, ["data", "prepare", "--data-dir", str(separate / "data")])
    assert result.exit_code == 0, result.output
    trained = CliRunner().invoke(
        app, ["train", "--data-dir", str(separate / "data"), "--out", str(separate / "v1")]
    )
    assert trained.exit_code == 0, trained.output
    assert calls == {
        "prepare": separate / "data",
        "train": (f"data from {separate / 'data'}", separate / "v1"),
    }


def test_prepare_and_train_go_ahead_before_the_registry_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_data: PreparedData
) -> None:
    monkeypatch.setenv("E2U_HOME", str(tmp_path))
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")
    monkeypatch.delenv("E2U_DATABASE_URL", raising=False)
    calls = _fake_workflows(monkeypatch, small_data)
    assert CliRunner().invoke(app, ["data", "prepare"]).exit_code == 0
    assert CliRunner().invoke(app, ["train"]).exit_code == 0
    data_dir = tmp_path / "data" / "default"
    assert calls == {"prepare": data_dir, "train": (f"data from {data_dir}", tmp_path / "adapters" / "v1")}
