"""The API is not ready until its database has applied the whole suppression ledger: a database restored
from a backup replays it (here: an entry the database lacks, as after a restore)."""

from __future__ import annotations

import pytest

from core.db.models import VersionStatus, utcnow
from core.db.repositories import catalog as catalog_repo
from core.services import registry
from core.services import suppression as suppression_service
from core.services.erasures import user_hash
from tests.app.conftest import Env

USER = "u3"


def test_not_ready_until_the_suppression_ledger_is_replayed(
    api_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = api_env.client
    assert client.get("/readyz").json()["suppression_ledger_applied"] is True
    settings = client.app.state.runtime.settings  # type: ignore[attr-defined]
    ledger = settings.suppression_ledger
    ledger.append([ledger.entry(user_hash(settings.certificate_salt, USER), None, utcnow())])

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("replay failed")

    with monkeypatch.context() as patch:
        patch.setattr(suppression_service, "replay", broken)
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["suppression_ledger_applied"] is False and answer.json()["database"] is True
        with api_env.sessions() as session:
            assert catalog_repo.user_known(session, USER)  # not replayed: the person is still there

    answer = client.get("/readyz")  # the probe replays
    assert answer.json()["suppression_ledger_applied"] is True
    with api_env.sessions() as session:
        assert not catalog_repo.user_known(session, USER)
        # v1 was made before the erasure: it may carry the data, so it is destroyed and never ready on
        assert registry.get_version(session, api_env.v1).status == VersionStatus.DESTROYED
    assert answer.status_code == 503 and answer.json()["registry_version"] == api_env.v1
