"""The ``e2u`` command line through typer's CliRunner: ``e2u data import`` writes into the database named
by the settings (E2U_HOME's embedded SQLite here), all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import app
from core.db.engine import make_engine, session_factory
from core.db.migrate import upgrade
from core.db.models import Interaction
from core.ml.data import PreparedData
from core.services.bootstrap import import_prepared
from tests.adapters import register_placeholder_version


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_data: PreparedData) -> Path:
    """E2U_HOME with a migrated SQLite registry holding the synthetic data set and a registered v1."""
    monkeypatch.setenv("E2U_HOME", str(tmp_path))
    monkeypatch.delenv("E2U_DATABASE_URL", raising=False)
    url = f"sqlite:///{(tmp_path / 'e2u.sqlite').resolve()}"
    upgrade(url)
    with session_factory(url)() as session:
        import_prepared(session, small_data)
        register_placeholder_version(session)
    return tmp_path


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
    assert bad.exit_code == 2
    assert "bad.csv: line 3, column 'timestamp'" in bad.output
    assert _interactions(home) == before

    good = runner.invoke(
        app, ["data", "import", "--ratings", str(home / "good.csv"), "--items", str(home / "items.csv")]
    )
    assert good.exit_code == 0, good.output
    assert "imported 2 ratings of 2 users; items: 1 added" in good.output
    assert _interactions(home) == before + 2
