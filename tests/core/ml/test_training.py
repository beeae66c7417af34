from __future__ import annotations

import pytest
import torch

from core.ml.model import LoraSpec, base_state, lora_state, new_adapter
from core.ml.training import TrainConfig, classification_loss, train_adapter


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
