"""Compositions used by the edges: prepare data, train the first adapter, load a scorer with an adapter."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.ml import data as data_mod
from core.ml.data import PreparedData, SampleConfig
from core.ml.model import LoadedModel, ModelConfig, load_adapter, load_base, new_adapter, save_adapter
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.training import (
    Checkpointing,
    TrainConfig,
    TrainResult,
    curve_document,
    train_adapter,
    write_json_atomic,
)


def prepare_data(
    folder: Path,
    sample_config: SampleConfig,
    ratings: Path | None = None,
    items: Path | None = None,
    users: Path | None = None,
    feedback: data_mod.FeedbackConfig | None = None,
) -> tuple[PreparedData, str]:
    """Build and save samples from MovieLens-100K (default) or the given CSVs, labelled as ``feedback``
    says (default: explicit ratings, ``sample_config.like_threshold``). Returns (data, sha256)."""
    if (ratings is None) != (items is None):
        raise data_mod.DataError("give both --ratings and --items, or neither (MovieLens-100K)")
    dataset = data_mod.import_csv(ratings, items, users) if ratings and items else data_mod.load_movielens()
    prepared = data_mod.prepare(dataset, sample_config, feedback)
    return prepared, data_mod.save_prepared(prepared, folder)


def scorer_for(loaded: LoadedModel, data: PreparedData, batch_size: int = 16) -> Scorer:
    catalog = Catalog.from_frames(data.items, data.users)
    return Scorer(loaded, PromptBuilder(loaded.tokenizer, catalog, loaded.prompt), batch_size=batch_size)


CURVE_FILE = "learning_curve.json"


@dataclass
class TrainedAdapter:
    folder: Path
    sha256: str
    result: TrainResult


def run_folder(adapter_folder: Path) -> Path:
    """Where a training run into ``adapter_folder`` keeps its checkpoint and live learning curve: a
    sibling ``<name>.run`` folder, so that the adapter folder only ever holds a finished adapter."""
    return adapter_folder.with_name(adapter_folder.name + ".run")


def train_first_adapter(
    model_config: ModelConfig,
    data: PreparedData,
    train_config: TrainConfig,
    folder: Path,
    progress: bool = True,
    checkpoint_every: int = 50,
    resume: bool = False,
) -> TrainedAdapter:
    """Instruction-tune adapter v1 on the train split, early-stopping on valid; saves weights + config and
    the learning curve (``learning_curve.json``) into ``folder``.  The run saves a checkpoint every
    ``checkpoint_every`` steps into ``run_folder(folder)``; ``resume`` continues from it."""
    loaded = load_base(model_config)
    new_adapter(loaded, train_config.lora, "v1", seed=train_config.seed)
    scorer = scorer_for(loaded, data, batch_size=max(16, train_config.batch_size))
    checkpointing = Checkpointing(run_folder(folder), every_steps=checkpoint_every, resume=resume)
    result = train_adapter(
        scorer,
        "v1",
        data.split("train"),
        data.split("valid"),
        train_config,
        progress=progress,
        checkpointing=checkpointing,
    )
    metadata: dict[str, Any] = {
        "kind": "train",
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "data_sha256": data.content_hash(),
        "sample_config": asdict(data.config),
        "result": asdict(result),
        "created_at": time.time(),
    }
    sha = save_adapter(loaded, "v1", folder, metadata)
    write_json_atomic(folder / CURVE_FILE, curve_document("v1", train_config, result))
    return TrainedAdapter(folder, sha, result)


def load_scorer(
    model_config: ModelConfig, data: PreparedData, adapter: Path | None, name: str = "active"
) -> Scorer:
    """Base model plus (optionally) a saved adapter, ready to score."""
    loaded = load_base(model_config)
    if adapter is not None:
        load_adapter(loaded, adapter, name)
    return scorer_for(loaded, data)


def read_adapter_metadata(folder: Path) -> dict[str, Any]:
    path = folder / "e2u.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}
