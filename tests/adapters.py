"""Test helper: save a LoRA adapter with random (non-zero) B matrices on the tiny model, so that two
versions score differently.  Untrained: for behaviour tests only."""

from __future__ import annotations

from pathlib import Path

import torch
from sqlalchemy.orm import Session

from core.ml.model import LoraSpec, ModelConfig, load_base, new_adapter, save_adapter
from core.services import registry


def save_random_adapter(
    config: ModelConfig, folder: Path, seed: int, scale: float = 0.02, rank: int = 2
) -> Path:
    loaded = load_base(config)
    new_adapter(loaded, LoraSpec(r=rank, alpha=2 * rank), "x", seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in loaded.model.named_parameters():
            if "lora_B" in name:
                value.copy_(scale * torch.randn(value.shape, generator=generator))
    save_adapter(loaded, "x", folder, {"kind": "train"})
    return folder


def register_placeholder_version(session: Session) -> None:
    """An active adapter row without weights, so that the registry counts as initialised (commits)."""
    registry.register_version(session, "v1", None, "tiny", Path("/nowhere"), "0" * 64, {}, {}, set())
    registry.activate_first(session, "v1")
    session.commit()
