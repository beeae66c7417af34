"""Shared fixtures.  The tiny model is random-init and untrained: tests assert behaviour, not quality."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.ml.data import Dataset, PreparedData, SampleConfig, prepare
from core.ml.model import SMOLLM2, TINY, TINY_T5, LoadedModel, ModelConfig, load_base, resolve_base
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from tests.installed import install_wheel

REPO = Path(__file__).resolve().parents[1]
# Converted models are cached in the repo's var/ (ignored by git) so that only the first run pays ~35 s.
MODELS_DIR = REPO / "var" / "models"
# made at once: tests link their homes' models/ here, and on a fresh clone the first test to run (BYO's
# adapter import) linked a folder that did not exist yet, so its CLI could not write the tiny model
MODELS_DIR.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def tiny_config() -> ModelConfig:
    return ModelConfig(base=TINY, cache_dir=str(MODELS_DIR), device="cpu")


@pytest.fixture(scope="session")
def tiny_t5_config(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    """The tiny random T5, built in a cache folder of the session's own whose SmolLM2 (the tokenizer it
    borrows) is the shared one: nothing new is written to the shared var/models."""
    cache = tmp_path_factory.mktemp("models")
    resolve_base(ModelConfig(base=SMOLLM2, cache_dir=str(MODELS_DIR)))  # converted once, if not yet
    (cache / "smollm2-135m-instruct").symlink_to(MODELS_DIR / "smollm2-135m-instruct")
    return ModelConfig(base=TINY_T5, cache_dir=str(cache), device="cpu")


@pytest.fixture(scope="session")
def _tiny_model_once(tiny_config: ModelConfig) -> LoadedModel:
    """Loaded once per session and never handed to a test: ``tiny_model`` gives out copies."""
    return load_base(tiny_config)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """For modules that train the tiny model: a 3M-parameter model gains nothing from threads, and on a
    shared 2-core machine OpenMP spinning makes each step ~30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_model(_tiny_model_once: LoadedModel) -> LoadedModel:
    """A fresh copy per test (weights, adapters, tokenizer), so no test sees another's changes."""
    return copy.deepcopy(_tiny_model_once)


def synthetic_dataset(users: int = 12, items: int = 20, per_user: int = 8, seed: int = 0) -> Dataset:
    """Ratings where even items are liked, so that there is a pattern to learn and to forget."""
    rng = np.random.default_rng(seed)
    rows = []
    t = 1_000_000
    for u in range(users):
        for i in rng.choice(items, size=per_user, replace=False):
            t += int(rng.integers(1, 100))
            liked = i % 2 == 0
            rows.append((f"u{u}", f"i{i}", float(rng.choice([4, 5] if liked else [1, 2])), t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(items)],
            "title": [f"Movie {i}" for i in range(items)],
            "genres": "",
        }
    )
    profiles = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(users)], "age": "30", "gender": "F", "occupation": "writer"}
    )
    return Dataset(interactions, catalog, profiles)


@pytest.fixture
def small_data() -> PreparedData:
    return prepare(synthetic_dataset(), SampleConfig(history_len=3))


@pytest.fixture
def tiny_scorer(tiny_model: LoadedModel, small_data: PreparedData) -> Scorer:
    catalog = Catalog.from_frames(small_data.items, small_data.users)
    return Scorer(tiny_model, PromptBuilder(tiny_model.tokenizer, catalog), batch_size=4)


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the e2u wheel built from this checkout (tests/installed.py)."""
    return install_wheel(tmp_path_factory.mktemp("wheel"))
