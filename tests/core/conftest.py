"""Database fixtures: every DB test runs on SQLite and on the machine's PostgreSQL (127.0.0.1:5432).

Migrations run first (once per session: a migrated SQLite template file copied per test; a fresh
PostgreSQL schema per session, its tables truncated per test), so each test starts from an empty,
migrated database.  Nothing is mocked.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker

from core.data_keys import Keyring
from core.db.engine import KEYRING_INFO, make_engine
from core.db.migrate import upgrade
from core.db.models import Base
from core.ml.data import PreparedData
from core.ml.model import LoadedModel, LoraSpec, new_adapter, save_adapter, unload_adapter
from core.ml.training import training_step
from core.ml.unlearning.adapters import activate
from core.ml.unlearning.base import METHODS, MethodConfig, UnlearningMethod, UnlearningReport, register
from core.services.bootstrap import import_prepared, register_first_version

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def throwaway_database(prefix: str) -> Iterator[tuple[str, str]]:
    """A PostgreSQL database of a test's own (``prefix_<random>``), dropped afterwards, connections and
    all: yields (its name, its SQLAlchemy URL).  For tests that run whole services or terminate backends."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    schema = f"e2u_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _truncate_postgres(url: str) -> None:
    schema = url.rsplit("%3D", 1)[1]
    tables = ", ".join(f'"{schema}"."{t.name}"' for t in Base.metadata.sorted_tables)
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: a SQLite file or a PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path / "e2u.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_schema_url")
    _truncate_postgres(url)
    return url


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    """A keyring on a fresh KEK file of the test's own."""
    return Keyring(tmp_path / "keys" / "data-kek", create_missing=True)


@pytest.fixture
def session_factory(db_url: str, keyring: Keyring) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield sessionmaker(bind=engine, expire_on_commit=False, info={KEYRING_INFO: keyring})
    engine.dispose()


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as db:
        yield db


# ---------------------------------------------------------------------------------------------- seeded data


@dataclass(frozen=True)
class NudgeConfig(MethodConfig):
    scale: float = 1e-4  # the child differs from the parent (a new version) but scores the same
    # > 0: the child then trains that many steps on F (lr 5e-2), so that it raises F's gold-label
    # probability, which the real verifier fails ("forget set raised"): a failure that is not noise
    learn_forget_steps: int = 0


class Nudge(UnlearningMethod):
    """A stand-in unlearning method for service tests: the child is the parent's LoRA plus seeded noise
    (so that it is a different version).  It asserts nothing about forgetting; the method tests do."""

    name = "test-nudge"
    config_class = NudgeConfig

    def run(self, inputs, config, child_name, on_progress=None, progress_bar=False):  # type: ignore[no-untyped-def]
        model = inputs.scorer.loaded.model
        model.add_adapter(child_name, model.peft_config[inputs.parent_name])
        params = dict(model.named_parameters())
        generator = torch.Generator().manual_seed(config.seed)
        with torch.no_grad():
            for name, value in params.items():
                if f".{inputs.parent_name}." in name:
                    target = params[name.replace(f".{inputs.parent_name}.", f".{child_name}.")]
                    target.copy_(value + config.scale * torch.randn(value.shape, generator=generator))
        model.set_adapter(child_name)
        if config.learn_forget_steps:
            activate(model, child_name, trainable=True)
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimiser = torch.optim.AdamW(trainable, lr=5e-2)
            for _ in range(config.learn_forget_steps):
                training_step(inputs.scorer, optimiser, inputs.forget)
            activate(model, child_name, trainable=False)
        for step in range(1, 4):
            if on_progress:
                on_progress("nudge", step, 3)
        return UnlearningReport(self.name, config.to_dict(), 0.0, 3, 0, 0, {})


if Nudge.name not in METHODS:
    register(Nudge)


@pytest.fixture
def seeded(session: Session, small_data: PreparedData) -> PreparedData:
    """The synthetic data set (12 users, 20 items) imported and committed."""
    import_prepared(session, small_data)
    session.commit()
    return small_data


@pytest.fixture
def adapters_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "adapters"
    folder.mkdir()
    return folder


def register_random_v1(session: Session, loaded: LoadedModel, adapters_dir: Path) -> str:
    """A random (untrained) LoRA adapter on ``loaded`` saved as v1 and registered as the active version."""
    new_adapter(loaded, LoraSpec(r=2, alpha=4), "v1", seed=0)
    with torch.no_grad():
        for name, value in loaded.model.named_parameters():
            if "lora_B" in name:
                value.normal_(0, 0.02)
    save_adapter(loaded, "v1", adapters_dir / "v1", {"kind": "train"})
    unload_adapter(loaded, "v1")
    version_id = register_first_version(session, adapters_dir / "v1", loaded.config.base)
    session.commit()
    assert version_id is not None
    return version_id


@pytest.fixture
def v1_id(session: Session, seeded: PreparedData, tiny_model: LoadedModel, adapters_dir: Path) -> str:
    """A random (untrained) LoRA adapter saved as v1 and registered as the active version."""
    return register_random_v1(session, tiny_model, adapters_dir)
