"""MovieLens data as users bring it (issue 9 §2): a generated ml-latest-small-shaped folder (MovieLens'
own headers, half stars, sparse ids, thousands of items, no profiles) goes through ``e2u data prepare
--from``, a few training steps of the tiny model, and an erasure that completes through the real pipeline
(the stand-in method ``test-nudge``, then the exact retrain if the verifier refuses it; the utility margin
widened for the tiny data).  Behaviour, not quality."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import tests.core.conftest  # noqa: F401  (registers the stand-in method test-nudge)
from app.cli import app
from core.db.engine import make_engine, session_factory
from core.db.migrate import upgrade
from core.db.models import Interaction
from core.ml.data import load_prepared
from core.ml.evidence import EvidenceConfig
from core.ml.model import LoadedModel
from core.services import batching, erasures, pipeline
from core.services.bootstrap import bootstrap
from core.settings import Settings
from tests.conftest import MODELS_DIR
from tests.core.services.test_pipeline import INTAKE, runtime
from tests.movielens import write_ml_latest_small


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "models").symlink_to(MODELS_DIR)
    monkeypatch.setenv("E2U_HOME", str(tmp_path))
    monkeypatch.setenv("E2U_BASE_MODEL", "tiny")
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")
    monkeypatch.delenv("E2U_DATABASE_URL", raising=False)
    return tmp_path


def test_an_ml_latest_small_folder_prepares_trains_and_an_erasure_completes(
    home: Path, tiny_model: LoadedModel
) -> None:
    folder = write_ml_latest_small(home / "ml-latest-small")
    runner = CliRunner()
    prepared = runner.invoke(app, ["data", "prepare", "--from", str(folder)])
    assert prepared.exit_code == 0, prepared.output
    assert "label: liked when rating > 3 (3.5 and up liked" in prepared.output
    data = load_prepared(home / "data" / "default")
    assert len(data.items) == 2000 and data.users.empty
    options = ["--max-steps", "3", "--eval-every", "3", "--batch-size", "4", "--valid-samples", "16"]
    trained = runner.invoke(app, ["train", *options])
    assert trained.exit_code == 0, trained.output

    url = f"sqlite:///{(home / 'e2u.sqlite').resolve()}"
    upgrade(url)
    engine = make_engine(url)
    keyring = Settings().keyring()  # the CLI's own KEK (home/keys/data-kek, made in development)
    with session_factory(engine, keyring)() as session:
        bootstrap(session, home / "data" / "default", home / "adapters" / "v1", "tiny")
        session.commit()
        train = data.split("train")
        user = str(train["user_id"].value_counts().index[0])  # a sparse MovieLens id, e.g. "417"
        stored = session.scalar(select(func.count()).where(Interaction.user_id == user))
        request, _ = erasures.create_erasure_request(session, user, None, INTAKE)
        session.commit()
        # a nudge that the real verifier may refuse; then the exact retrain (the fallback) takes the request.
        # The utility margin is widened: 3 training steps on ~100 validation samples give an AUC-difference
        # interval of about +-0.04, wider than the default 0.02 whatever the child (the rest is real)
        lenient = EvidenceConfig(utility_margin=0.1)
        settings = batching.JobSettings(method="test-nudge", max_retries=0, thresholds=lenient)
        [job_id] = batching.trigger_batch_now(session, settings)
        session.commit()
        pipeline_runtime = runtime(tiny_model, home / "adapters", prepared_data_dir=home / "data" / "default")
        outcome = pipeline.run_job(session, job_id, pipeline_runtime, session.commit)
        if outcome.follow_up_jobs:
            [job_id] = outcome.follow_up_jobs
            outcome = pipeline.run_job(session, job_id, pipeline_runtime, session.commit)
        assert outcome.status == "succeeded", outcome.reason
        done = erasures.get_erasure_request(session, request.id)
        assert done.status == "completed" and done.rows_deleted == stored and done.forget_samples
        assert session.scalar(select(func.count()).where(Interaction.user_id == user)) == 0
    engine.dispose()
    assert user not in set(load_prepared(home / "data" / "default").samples["user_id"])
