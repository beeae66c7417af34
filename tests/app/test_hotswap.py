"""Hot swap without Redis: a promotion committed by another process (the embedded worker) reaches the API at
once through the promotion stamp file under home, not at the registry poll (600 s here)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.main import create_app
from app.runtime import StampListener
from app.settings import ApiSettings
from core.data_keys import Keyring
from core.db.engine import KEYRING_INFO, make_engine
from core.db.migrate import upgrade
from core.db.repositories import serving as serving_repo
from core.events import PromotionStamp, promotion_event, promotion_publisher
from core.ml.data import PreparedData
from core.ml.model import ModelConfig, adapter_sha256, load_base
from core.ml.prompts import Catalog
from core.services import registry
from core.services.api_keys import create_api_key
from core.services.bootstrap import import_prepared, register_first_version
from core.serving import ModelServer
from tests.adapters import save_random_adapter


@dataclass
class Api:
    client: TestClient
    settings: ApiSettings
    sessions: sessionmaker[Session]
    headers: dict[str, str]
    v1: str
    v2: str  # registered, not active


@pytest.fixture
def api(tmp_path: Path, tiny_config: ModelConfig, small_data: PreparedData) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path / 'e2u.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    keyring = Keyring(tmp_path / "keys" / "data-kek", create_missing=True)
    sessions = sessionmaker(bind=engine, expire_on_commit=False, info={KEYRING_INFO: keyring})
    v2_folder = save_random_adapter(tiny_config, tmp_path / "adapters" / "v2", 2, scale=0.5)
    with sessions() as session:
        import_prepared(session, small_data)
        v1 = register_first_version(
            session, save_random_adapter(tiny_config, tmp_path / "adapters" / "v1", 1), "tiny"
        )
        sha = adapter_sha256(v2_folder)
        registry.register_version(session, "v2", v1, "tiny", v2_folder, sha, {}, {}, set())
        key = create_api_key(session, "backend", ["recommend"])
        session.commit()
    assert v1 is not None
    # no Redis, and a registry poll far longer than the test: only the stamp can move the API in time
    settings = ApiSettings(
        environment="development",
        home=tmp_path,
        database_url=url,
        base_model="tiny",
        adapter_poll_seconds=600,
        history_len=3,
    )
    server = ModelServer(load_base(tiny_config), Catalog(titles={}, profiles={}), batch_size=8)
    with TestClient(create_app(settings, model_server=server)) as client:
        yield Api(client, settings, sessions, {"X-API-Key": key}, v1, "v2")
    engine.dispose()


def _served(api: Api) -> str:
    response = api.client.post("/v1/recommendations", json={"user_id": "u1", "k": 2}, headers=api.headers)
    assert response.status_code == 200, response.text
    version: str = response.json()["adapter_version"]
    return version


def test_a_promotion_by_another_process_reaches_the_api_without_redis(api: Api) -> None:
    assert _served(api) == api.v1
    runtime = api.client.app.state.runtime  # type: ignore[attr-defined]
    # what the pipeline's _promote does in the worker: commit the alias move, then announce it with the
    # publisher its settings give (no Redis URL: the stamp file under home is the only channel)
    with api.sessions() as session:
        active = registry.promote_version(session, api.v2, api.v1, 1, actor="worker")
        session.commit()
    assert promotion_publisher(api.settings).publish(
        promotion_event(active.version_id, active.counter, api.v1, "promote")
    )
    # the confirmation the pipeline waits for before it reports the erasure completed
    deadline = time.monotonic() + 30  # bounds a failure only: the poll alone would take 600 s
    while time.monotonic() < deadline:
        with api.sessions() as session:
            if runtime.process_id in serving_repo.confirmations(session, api.v2):
                break
        time.sleep(0.02)
    with api.sessions() as session:
        assert runtime.process_id in serving_repo.confirmations(session, api.v2)
    assert _served(api) == api.v2
    assert runtime.model_server.loaded_versions() == [api.v2]


def test_an_unreadable_stamp_warns_once_and_a_readable_one_wakes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stamp that cannot be read (here a folder in its place) is looked at every interval: one warning
    for the stretch, not one per look; once it reads again, a new text wakes the watcher."""
    path = tmp_path / "adapter-promoted.json"
    path.mkdir()
    woken: list[int] = []
    listener = StampListener(PromotionStamp(path), lambda: woken.append(1), interval_seconds=0.01)
    listener.start()
    try:
        time.sleep(0.2)  # ~20 looks at the unreadable stamp
        warnings = [r for r in caplog.records if "promotion stamp" in r.getMessage()]
        assert len(warnings) == 1 and not woken
        path.rmdir()
        PromotionStamp(path).write({"version": "v2", "counter": 1})
        deadline = time.monotonic() + 5
        while not woken and time.monotonic() < deadline:
            time.sleep(0.01)
        assert woken and listener.received == 1
    finally:
        listener.stop()
