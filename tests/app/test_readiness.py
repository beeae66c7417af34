"""Readiness follows the registry: a process is ready only while it serves the registry's active version;
when that version does not load it refuses to serve (never the superseded one); it confirms what it
serves in ``serving_confirmations``."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select

from core.db.models import ServingConfirmation
from core.ml.model import ModelConfig, adapter_sha256
from core.services import registry
from tests.adapters import save_random_adapter
from tests.app.conftest import Env


def _promote(env: Env, version_id: str, folder: Path) -> None:
    with env.sessions() as session:
        active = registry.active_adapter(session)
        assert active is not None
        registry.register_version(
            session, version_id, active.version_id, "tiny", folder, adapter_sha256(folder), {}, {}, set()
        )
        registry.promote_version(session, version_id, active.version_id, active.counter, "test")
        session.commit()


def test_ready_only_while_serving_the_registry_active_version(
    api_env: Env, tiny_config: ModelConfig, tmp_path: Path
) -> None:
    client, runtime = api_env.client, api_env.client.app.state.runtime  # type: ignore[attr-defined]
    recommend = api_env.keys.header("recommend")
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["adapter_version"] == ready.json()["registry_version"] == api_env.v1
    with api_env.sessions() as session:
        [row] = session.scalars(select(ServingConfirmation)).all()
    assert (row.process_id, row.version_id) == (runtime.process_id, api_env.v1)
    assert ready.json()["process_id"] == runtime.process_id  # which process answered, as confirmed

    # the registry moves to a version whose weights then fail to load here (promotion checked them; the
    # store lost them since)
    runtime.watcher.stop()  # hold the watcher still: the promotion is seen by readiness alone first
    broken = save_random_adapter(tiny_config, tmp_path / "v2-broken", 2)
    _promote(api_env, "v2-broken", broken)
    shutil.rmtree(broken)
    behind = client.get("/readyz")
    assert behind.status_code == 503
    assert (behind.json()["adapter_version"], behind.json()["registry_version"]) == (api_env.v1, "v2-broken")
    runtime.watcher.tick()  # the load fails: the process stops serving v1 rather than stay on it
    assert runtime.watcher.last_error is not None
    refused = client.post("/v1/recommendations", json={"user_id": "u1", "k": 2}, headers=recommend)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_active_adapter"
    assert "v2-broken could not be loaded" in refused.json()["error"]["message"]
    assert client.get("/readyz").status_code == 503 and api_env.v1 in runtime.model_server.freed

    # a version that loads: serving and ready again, and confirmed
    _promote(api_env, "v3", save_random_adapter(tiny_config, tmp_path / "v3", 3))
    runtime.watcher.tick()
    assert client.get("/readyz").status_code == 200
    served = client.post("/v1/recommendations", json={"user_id": "u1", "k": 2}, headers=recommend)
    assert served.status_code == 200 and served.json()["adapter_version"] == "v3"
    with api_env.sessions() as session:
        versions = {r.version_id for r in session.scalars(select(ServingConfirmation))}
    assert versions == {api_env.v1, "v3"}
