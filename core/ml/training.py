"""Instruction-tuning a LoRA adapter on rating samples (the base model stays frozen).

The loss is cross-entropy on the two label logits at the answer position (the same two logits the scorer
reads), so training and serving agree on what the model's answer is.  Early stopping watches the AUC on a
fixed validation subset and restores the best weights; the test split is never looked at here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from core.ml import metrics
from core.ml.model import LoraSpec, lora_state
from core.ml.scoring import Scorer


@dataclass(frozen=True)
class TrainConfig:
    """LoRA instruction-tuning recipe.  Budgets: ``max_steps`` optimiser steps and, optionally,
    ``max_samples`` distinct training samples (a random subset, chosen with ``seed``)."""

    lora: LoraSpec = field(default_factory=LoraSpec)
    learning_rate: float = 1e-3
    batch_size: int = 8
    max_steps: int = 200
    max_samples: int | None = None
    eval_every: int = 50
    patience: int = 3
    valid_samples: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1 or self.max_steps < 1 or self.eval_every < 1:
            raise ValueError("batch_size, max_steps and eval_every must be >= 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {self.max_samples}")
        if self.patience < 1 or self.valid_samples < 2:
            raise ValueError("patience must be >= 1 and valid_samples >= 2")

    @classmethod
    def quick(cls, steps: int) -> TrainConfig:
        """The quick-start recipe (``e2u init``/``serve``): ``steps`` optimiser steps, validated every third
        of them (at least 10 steps apart) on 128 samples; the rest as the defaults."""
        return cls(max_steps=steps, eval_every=max(10, steps // 3), valid_samples=128)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        values = dict(raw)
        lora = values.pop("lora", {})
        lora_spec = LoraSpec(
            **{**lora, "target_modules": tuple(lora.get("target_modules", LoraSpec().target_modules))}
        )
        return cls(lora=lora_spec, **values)


@dataclass
class TrainResult:
    steps: int
    samples_seen: int
    seconds: float
    best_valid_auc: float
    curve: list[dict[str, float]]  # one point per evaluation: step, samples, train_loss, valid_auc


def label_targets(labels: pd.Series | np.ndarray) -> torch.Tensor:
    """Class index for the 2-logit head: 0 = positive word, 1 = negative word."""
    return torch.tensor(1 - np.asarray(labels, dtype=np.int64))


def classification_loss(scorer: Scorer, batch: pd.DataFrame) -> torch.Tensor:
    logits = scorer.logits(scorer.encode_frame(batch))
    return F.cross_entropy(logits, label_targets(batch["label"]).to(logits.device))


def batches(frame: pd.DataFrame, batch_size: int, seed: int) -> Iterator[pd.DataFrame]:
    """Endless shuffled mini-batches, a new permutation each epoch."""
    if frame.empty:
        raise ValueError("cannot draw batches from an empty frame")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(frame))
        for start in range(0, len(order), batch_size):
            yield frame.iloc[order[start : start + batch_size]]


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    if not params or any("lora_" not in n for n, p in model.named_parameters() if p.requires_grad):
        raise RuntimeError("only LoRA parameters may train; found none or others")
    return params


def train_adapter(
    scorer: Scorer,
    adapter_name: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    config: TrainConfig,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train the (already attached, active) adapter ``adapter_name`` on ``train``; early-stop on ``valid``.

    ``on_step(step, max_steps)`` is called after every optimiser step (for job progress).
    """
    model = scorer.loaded.model
    torch.manual_seed(config.seed)
    if config.max_samples is not None and config.max_samples < len(train):
        train = train.sample(n=config.max_samples, random_state=config.seed)
    valid_subset = valid.sample(n=min(config.valid_samples, len(valid)), random_state=config.seed)
    params = trainable_parameters(model)
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    started = time.perf_counter()
    best_auc, best_state, stale = -math.inf, lora_state(model, adapter_name), 0
    curve: list[dict[str, float]] = []
    running: list[float] = []
    step = 0
    bar = tqdm(total=config.max_steps, desc=f"training {adapter_name}", disable=not progress, unit="step")
    for step, batch in enumerate(batches(train, config.batch_size, config.seed), start=1):
        model.train()
        loss = classification_loss(scorer, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}")
        if on_step:
            on_step(step, config.max_steps)
        if step % config.eval_every == 0 or step == config.max_steps:
            model.eval()
            valid_auc = metrics.auc(valid_subset["label"].to_numpy(), scorer.score(valid_subset))
            curve.append(
                {
                    "step": step,
                    "samples": step * config.batch_size,
                    "train_loss": float(np.mean(running[-config.eval_every :])),
                    "valid_auc": valid_auc,
                }
            )
            bar.set_postfix(loss=f"{curve[-1]['train_loss']:.3f}", valid_auc=f"{valid_auc:.3f}")
            if valid_auc > best_auc:
                best_auc, best_state, stale = valid_auc, lora_state(model, adapter_name), 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
        if step >= config.max_steps:
            break
    bar.close()
    model.eval()
    with torch.no_grad():  # restore the best weights seen on validation
        named = dict(model.named_parameters())
        for key, value in best_state.items():
            named[key].copy_(value)
    return TrainResult(step, step * config.batch_size, time.perf_counter() - started, best_auc, curve)
