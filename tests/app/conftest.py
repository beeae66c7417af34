"""Fixtures of the HTTP edge: a migrated SQLite database seeded with the synthetic data set and a tiny
(random-init, untrained) adapter v1, API keys per scope, and an in-process client.

The tiny model is untrained: tests assert behaviour (status codes, versions, what changed), not quality.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.main import create_app
from app.settings import ApiSettings
from core.data_keys import Keyring
from core.db.engine import KEYRING_INFO, make_engine
from core.db.migrate import upgrade
from core.ml.data import PreparedData
from core.ml.model import ModelConfig, load_base
from core.ml.prompts import Catalog
from core.services.api_keys import create_api_key
from core.services.bootstrap import import_prepared, register_first_version
from core.serving import ModelServer
from tests.adapters import save_random_adapter


@dataclass
class Keys:
    recommend: str
    erase: str
    admin: str
    all: str

    def header(self, scope: str) -> dict[str, str]:
        return {"X-API-Key": getattr(self, scope)}


@dataclass
class Env:
    client: TestClient
    sessions: sessionmaker[Session]
    keys: Keys
    v1: str
    home: Path
    sent: list[int] = field(default_factory=list)  # job ids the app handed to the queue


@contextmanager
def running_api(
    tmp_path: Path,
    tiny_config: ModelConfig,
    small_data: PreparedData,
    server: ModelServer | None = None,
    **settings: Any,
) -> Iterator[Env]:
    """The seeded database and the app in a TestClient; ``settings`` override the test defaults, and
    ``server`` replaces the default tiny model server."""
    url = f"sqlite:///{tmp_path / 'e2u.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    keyring = Keyring(tmp_path / "keys" / "data-kek", create_missing=True)  # the settings' default KEK
    sessions = sessionmaker(bind=engine, expire_on_commit=False, info={KEYRING_INFO: keyring})
    with sessions() as session:
        import_prepared(session, small_data)
        v1 = register_first_version(
            session, save_random_adapter(tiny_config, tmp_path / "adapters" / "v1", 1), "tiny"
        )
        keys = Keys(
            recommend=create_api_key(session, "backend", ["recommend"]),
            erase=create_api_key(session, "privacy", ["erase"]),
            admin=create_api_key(session, "ops", ["admin"]),
            all=create_api_key(session, "root", ["admin", "erase", "recommend"]),
        )
        session.commit()
    assert v1 is not None
    defaults: dict[str, Any] = {
        "environment": "development",
        "home": tmp_path,
        "database_url": url,
        "base_model": "tiny",
        "adapter_poll_seconds": 0.5,
        "history_len": 3,
    }
    api_settings = ApiSettings(**(defaults | settings))
    if server is None:
        server = ModelServer(load_base(tiny_config), Catalog(titles={}, profiles={}), batch_size=8)
    app = create_app(api_settings, model_server=server)
    with TestClient(app) as client:
        env = Env(client, sessions, keys, v1, tmp_path)
        app.state.runtime.tasks.run_job = env.sent.append  # record instead of sending to a broker
        yield env
    engine.dispose()


@pytest.fixture
def api_env(tmp_path: Path, tiny_config: ModelConfig, small_data: PreparedData) -> Iterator[Env]:
    with running_api(tmp_path, tiny_config, small_data) as env:
        yield env
