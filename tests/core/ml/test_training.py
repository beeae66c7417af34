from __future__ import annotations

import copy
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from core.ml.data import PreparedData
from core.ml.model import LoadedModel, LoraSpec, base_state, lora_state, new_adapter
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.training import (
    CheckpointError,
    Checkpointing,
    TrainConfig,
    classification_loss,
    train_adapter,
)


def test_training_lowers_the_training_loss_and_touches_only_lora(tiny_scorer, small_data) -> None:
    loaded = tiny_scorer.loaded
    new_adapter(loaded, LoraSpec(r=4, alpha=8), "v1", seed=0)
    train = small_data.split("train")
    frozen = base_state(loaded.model)
    start = lora_state(loaded.model, "v1")
    with torch.no_grad():
        before = float(classification_loss(tiny_scorer, train))
    config = TrainConfig(
        lora=LoraSpec(r=4, alpha=8),
        learning_rate=5e-3,
        batch_size=8,
        max_steps=30,
        eval_every=10,
        patience=10,
        valid_samples=8,
    )
    result = train_adapter(tiny_scorer, "v1", train, small_data.split("valid"), config, progress=False)
    with torch.no_grad():
        after = float(classification_loss(tiny_scorer, train))
    assert after < before
    assert result.steps == 30 and len(result.curve) == 3
    changed = lora_state(loaded.model, "v1")
    assert any(not torch.equal(changed[k], start[k]) for k in start)
    for key, value in base_state(loaded.model).items():
        assert torch.equal(value, frozen[key])


def test_train_config_rejects_nonsense_and_round_trips() -> None:
    with pytest.raises(ValueError, match="learning_rate must be > 0, got 0"):
        TrainConfig(learning_rate=0)
    with pytest.raises(ValueError, match="max_samples must be >= 1 or None, got 0"):
        TrainConfig(max_samples=0)
    config = TrainConfig(lora=LoraSpec(r=4, alpha=8), max_steps=7)
    assert TrainConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------------------------------------- long runs


class Killed(Exception):
    """Stands for a kill: raised from inside the training loop, after a checkpoint and before the end."""


def _fresh_scorer(model: LoadedModel, data: PreparedData, adapter_seed: int) -> Scorer:
    loaded = copy.deepcopy(model)
    new_adapter(loaded, LONG_RUN.lora, "v1", seed=adapter_seed)
    return Scorer(loaded, PromptBuilder(loaded.tokenizer, Catalog.from_frames(data.items, data.users)), 4)


# dropout on, a warm-up and a cosine schedule, more than one epoch (about 10 batches of 8 per epoch):
# every piece of state that a resumed run must restore matters here
LONG_RUN = TrainConfig(
    lora=LoraSpec(r=4, alpha=8, dropout=0.1),
    learning_rate=5e-3,
    batch_size=8,
    max_steps=24,
    eval_every=6,
    patience=10,
    valid_samples=8,
    schedule="cosine",
    warmup_steps=3,
)


def test_a_killed_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(
    _tiny_model_once: LoadedModel, small_data: PreparedData, tmp_path: Path
) -> None:
    train, valid = small_data.split("train"), small_data.split("valid")
    whole = _fresh_scorer(_tiny_model_once, small_data, adapter_seed=0)
    expected = train_adapter(whole, "v1", train, valid, LONG_RUN, progress=False)

    checkpoints = Checkpointing(tmp_path / "run", every_steps=5)
    first = _fresh_scorer(_tiny_model_once, small_data, adapter_seed=0)

    def kill_at_step_13(step: int, _total: int) -> None:
        if step == 13:
            raise Killed

    with pytest.raises(Killed):
        train_adapter(first, "v1", train, valid, LONG_RUN, False, kill_at_step_13, checkpoints)
    assert checkpoints.checkpoint_path.exists() and not list(checkpoints.folder.glob("*.tmp"))
    saved_curve = json.loads(checkpoints.curve_path.read_text())
    assert [p["step"] for p in saved_curve["points"]] == [6, 12]

    # another process: a fresh model whose new adapter starts from other weights, as after a restart
    second = _fresh_scorer(_tiny_model_once, small_data, adapter_seed=1)
    resumed = train_adapter(
        second, "v1", train, valid, LONG_RUN, False, checkpointing=replace(checkpoints, resume=True)
    )
    assert resumed.resumed_from_step == 10  # the last checkpoint before the kill
    assert (resumed.steps, resumed.samples_seen, resumed.stopped_by) == (
        24,
        expected.samples_seen,
        "max_steps",
    )
    assert resumed.best_valid_auc == expected.best_valid_auc

    def without_time(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in p.items() if k != "seconds"} for p in curve]

    assert without_time(resumed.curve) == without_time(expected.curve)
    assert [p["step"] for p in resumed.curve] == [6, 12, 18, 24]
    want, got = lora_state(whole.loaded.model, "v1"), lora_state(second.loaded.model, "v1")
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_resume_refuses_another_recipe_or_other_data_but_a_longer_time_budget_continues(
    tiny_scorer: Scorer, small_data: PreparedData, tmp_path: Path
) -> None:
    new_adapter(tiny_scorer.loaded, LONG_RUN.lora, "v1", seed=0)
    train, valid = small_data.split("train"), small_data.split("valid")
    checkpoints = Checkpointing(tmp_path / "run", every_steps=4)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train_adapter(
            tiny_scorer, "v1", train, valid, LONG_RUN, False, checkpointing=replace(checkpoints, resume=True)
        )
    # a budget of 1 ms stops after the first step, which is then validated and checkpointed
    short = replace(LONG_RUN, max_minutes=1 / 60_000)
    stopped = train_adapter(tiny_scorer, "v1", train, valid, short, False, checkpointing=checkpoints)
    assert (stopped.steps, stopped.stopped_by, [p["step"] for p in stopped.curve]) == (1, "time_budget", [1])
    resume = replace(checkpoints, resume=True)
    with pytest.raises(CheckpointError, match="another recipe"):
        train_adapter(
            tiny_scorer,
            "v1",
            train,
            valid,
            replace(LONG_RUN, learning_rate=1e-2),
            False,
            checkpointing=resume,
        )
    with pytest.raises(CheckpointError, match="other training data"):
        train_adapter(tiny_scorer, "v1", train.iloc[1:], valid, LONG_RUN, False, checkpointing=resume)
    finished = train_adapter(
        tiny_scorer, "v1", train, valid, replace(LONG_RUN, max_minutes=60), False, checkpointing=resume
    )
    assert (finished.resumed_from_step, finished.steps, finished.stopped_by) == (1, 24, "max_steps")
    assert [p["step"] for p in finished.curve] == [1, 6, 12, 18, 24]


def test_the_curve_has_valid_auc_intervals_and_early_stopping_still_stops(
    tiny_scorer: Scorer, small_data: PreparedData
) -> None:
    new_adapter(tiny_scorer.loaded, LONG_RUN.lora, "v1", seed=0)
    # a learning rate so small that the valid AUC cannot improve after the first validation
    config = replace(LONG_RUN, learning_rate=1e-9, eval_every=2, patience=2, valid_samples=16)
    result = train_adapter(
        tiny_scorer, "v1", small_data.split("train"), small_data.split("valid"), config, False
    )
    assert result.stopped_by == "early_stopping" and result.steps == 6
    for point in result.curve:
        low, high = point["valid_auc_ci95"]
        assert 0 <= low <= high <= 1 and point["valid_samples"] == len(small_data.split("valid"))
        assert point["samples"] == point["step"] * 8 and point["train_loss"] > 0


def test_learning_rate_schedules_warm_up_then_decay_to_zero() -> None:
    cosine = TrainConfig(max_steps=10, warmup_steps=2, schedule="cosine")
    factors = [cosine.learning_rate_factor(s) for s in range(11)]
    assert factors[0] < factors[1] < factors[2] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(factors[2:])) and factors[10] == 0.0
    assert TrainConfig(max_steps=10, schedule="linear").learning_rate_factor(5) == 0.5
    assert {TrainConfig().learning_rate_factor(s) for s in range(200)} == {1.0}
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        TrainConfig(max_steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        TrainConfig(max_minutes=0)
