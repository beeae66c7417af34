"""Instruction-tuning a LoRA adapter on rating samples (the base model stays frozen).

The loss is cross-entropy on the two label logits at the answer position (the same two logits the scorer
reads), so training and serving agree on what the model's answer is.  Early stopping watches the AUC on a
fixed validation subset and restores the best weights; the test split is never looked at here.

A run can be long (hours on a CPU): it stops at a step budget, a time budget or early stopping, whichever
comes first, and with ``Checkpointing`` it saves its whole state (adapter, optimiser, schedule, RNG, data
position, curve) every few steps, atomically, so that a killed run resumes where it stopped and ends with
the same weights as an uninterrupted run of the same seed.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from core.ml import metrics
from core.ml.data import frame_hash
from core.ml.model import LoraSpec, lora_state
from core.ml.scoring import Scorer
from core.serialization import json_safe

SCHEDULES = ("constant", "linear", "cosine")
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed here (missing, another recipe, other data, other adapter)."""


@dataclass(frozen=True)
class TrainConfig:
    """LoRA instruction-tuning recipe.  Budgets: ``max_steps`` optimiser steps, optionally ``max_minutes``
    of wall time (training and validation, summed over resumed sessions) and ``max_samples`` distinct
    training samples (a random subset, chosen with ``seed``).  ``schedule``: the learning rate after
    ``warmup_steps`` of linear warm-up: constant, or decaying linearly / as a cosine to 0 at ``max_steps``."""

    lora: LoraSpec = field(default_factory=LoraSpec)
    learning_rate: float = 1e-3
    batch_size: int = 8
    max_steps: int = 200
    max_samples: int | None = None
    eval_every: int = 50
    patience: int = 3
    valid_samples: int = 256
    seed: int = 0
    schedule: str = "constant"
    warmup_steps: int = 0
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1 or self.max_steps < 1 or self.eval_every < 1:
            raise ValueError("batch_size, max_steps and eval_every must be >= 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {self.max_samples}")
        if self.patience < 1 or self.valid_samples < 2:
            raise ValueError("patience must be >= 1 and valid_samples >= 2")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(f"warmup_steps must be in [0, max_steps), got {self.warmup_steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0 or None, got {self.max_minutes}")

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

    def learning_rate_factor(self, step: int) -> float:
        """Multiplier of ``learning_rate`` for optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        if self.schedule == "linear":
            return 1.0 - progress
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a run saves its state: ``folder`` gets ``checkpoint.pt`` (every ``every_steps``
    steps and at the end) and ``learning_curve.json`` (at every validation).  ``resume``: start from the
    checkpoint in ``folder`` (which must exist and come from the same recipe and training data)."""

    folder: Path
    every_steps: int = 50
    resume: bool = False

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {self.every_steps}")

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    @property
    def curve_path(self) -> Path:
        return self.folder / "learning_curve.json"


@dataclass
class TrainResult:
    steps: int
    samples_seen: int
    seconds: float
    best_valid_auc: float
    # one point per validation: step, samples, seconds, train_loss, valid_auc, valid_auc_ci95 [low, high]
    curve: list[dict[str, Any]]
    stopped_by: str = "max_steps"  # max_steps | early_stopping | time_budget
    resumed_from_step: int = 0


def label_targets(labels: pd.Series | np.ndarray) -> torch.Tensor:
    """Class index for the 2-logit head: 0 = positive word, 1 = negative word."""
    return torch.tensor(1 - np.asarray(labels, dtype=np.int64))


def classification_loss(scorer: Scorer, batch: pd.DataFrame) -> torch.Tensor:
    logits = scorer.logits(scorer.encode_frame(batch))
    return F.cross_entropy(logits, label_targets(batch["label"]).to(logits.device))


def training_step(scorer: Scorer, optimiser: torch.optim.Optimizer, batch: pd.DataFrame) -> float:
    """One optimiser step on ``batch`` with the active adapter; returns the batch's loss.  On CUDA the
    forward pass runs under bf16 autocast (the LoRA weights and the optimiser stay fp32); CPU stays fp32."""
    device = scorer.loaded.device
    scorer.loaded.model.train()
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = classification_loss(scorer, batch)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


class BatchOrder:
    """Shuffled mini-batch indices over ``size`` rows, a new permutation each epoch, drawn from one
    generator seeded with ``seed``.  ``epoch`` and ``offset`` (rows of the epoch already served) are its
    whole position: ``BatchOrder(size, batch_size, seed, epoch, offset)`` continues where one left off."""

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int = 0, offset: int = 0) -> None:
        if size < 1:
            raise ValueError("cannot draw batches from an empty frame")
        self.size, self.batch_size = size, batch_size
        self._rng = np.random.default_rng(seed)
        for _ in range(epoch):  # replaying earlier epochs' draws is cheap and exact
            self._rng.permutation(size)
        self.epoch, self.offset = epoch, offset
        self._order = self._rng.permutation(size)

    def next(self) -> np.ndarray:
        if self.offset >= self.size:
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._rng.permutation(self.size)
        chunk = self._order[self.offset : self.offset + self.batch_size]
        self.offset += len(chunk)
        return chunk


def batches(frame: pd.DataFrame, batch_size: int, seed: int) -> Iterator[pd.DataFrame]:
    """Endless shuffled mini-batches, a new permutation each epoch."""
    order = BatchOrder(len(frame), batch_size, seed)
    while True:
        yield frame.iloc[order.next()]


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    if not params or any("lora_" not in n for n, p in model.named_parameters() if p.requires_grad):
        raise RuntimeError("only LoRA parameters may train; found none or others")
    return params


def write_json_atomic(path: Path, document: Any) -> None:
    """Write strict JSON to ``path`` through a temporary file and a rename: a reader (or a crash) never
    sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(document), indent=2, allow_nan=False))
    os.replace(tmp, path)


def curve_document(adapter_name: str, config: TrainConfig, result: TrainResult) -> dict[str, Any]:
    """The learning curve as saved beside an adapter (``learning_curve.json``)."""
    return {
        "adapter": adapter_name,
        "train_config": config.to_dict(),
        "stopped_by": result.stopped_by,
        "steps": result.steps,
        "samples_seen": result.samples_seen,
        "seconds": result.seconds,
        "best_valid_auc": result.best_valid_auc,
        "points": result.curve,
    }


def _recipe(config: TrainConfig) -> str:
    # the time budget may grow between sessions (``--resume --minutes`` more); everything else is fixed
    return json.dumps(replace(config, max_minutes=None).to_dict(), sort_keys=True)


def _data_fingerprint(train: pd.DataFrame) -> str:
    return frame_hash(train[["user_id", "item_id", "history", "label"]])


@dataclass
class _RunState:
    """Everything that a checkpoint carries besides the tensors of model, optimiser and schedule."""

    step: int = 0
    samples_seen: int = 0
    seconds: float = 0.0
    best_auc: float = -math.inf
    stale: int = 0
    losses: list[float] = field(default_factory=list)  # since the last validation (at most eval_every)
    curve: list[dict[str, Any]] = field(default_factory=list)


def _save_checkpoint(
    path: Path,
    config: TrainConfig,
    fingerprint: str,
    state: _RunState,
    order: BatchOrder,
    adapter: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor],
    optimiser: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "recipe": _recipe(config),
        "data": fingerprint,
        "state": json.dumps(asdict(state)),  # -inf (no validation yet) survives as JSON's -Infinity
        "epoch": order.epoch,
        "offset": order.offset,
        "adapter": adapter,
        "best": best,
        "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a kill during the write leaves the previous checkpoint intact


def _load_checkpoint(path: Path, config: TrainConfig, fingerprint: str) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {payload.get('format')!r}, expected 1")
    if payload["recipe"] != _recipe(config):
        raise CheckpointError(
            f"{path}: made with another recipe {payload['recipe']}; resume with the same options "
            "(only --minutes may change)"
        )
    if payload["data"] != fingerprint:
        raise CheckpointError(f"{path}: made on other training data (prepare the same data to resume)")
    return payload


def _load_tensors(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    named = dict(model.named_parameters())
    if set(tensors) - set(named):
        raise CheckpointError("the checkpoint's adapter tensors do not match this adapter (name or shape)")
    with torch.no_grad():
        for key, value in tensors.items():
            named[key].copy_(value)


def train_adapter(
    scorer: Scorer,
    adapter_name: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    config: TrainConfig,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    checkpointing: Checkpointing | None = None,
) -> TrainResult:
    """Train the (already attached, active) adapter ``adapter_name`` on ``train``; early-stop on ``valid``.

    ``on_step(step, max_steps)`` is called after every optimiser step (for job progress).
    ``checkpointing``: save the run's state periodically (and resume from it); see ``Checkpointing``.
    On CUDA the forward pass runs under bf16 autocast; on CPU everything stays fp32.
    """
    model = scorer.loaded.model
    torch.manual_seed(config.seed)
    if config.max_samples is not None and config.max_samples < len(train):
        train = train.sample(n=config.max_samples, random_state=config.seed)
    valid_subset = valid.sample(n=min(config.valid_samples, len(valid)), random_state=config.seed)
    valid_labels = valid_subset["label"].to_numpy()
    params = trainable_parameters(model)
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    # a plain function (not a bound method), so that the scheduler's state dict holds no callable's state
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: config.learning_rate_factor(step))
    fingerprint = _data_fingerprint(train) if checkpointing else ""
    state = _RunState()
    best_state = lora_state(model, adapter_name)
    order = BatchOrder(len(train), config.batch_size, config.seed)
    if checkpointing and checkpointing.resume:
        payload = _load_checkpoint(checkpointing.checkpoint_path, config, fingerprint)
        _load_tensors(model, payload["adapter"])
        best_state = payload["best"]
        optimiser.load_state_dict(payload["optimiser"])
        scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["torch_rng"])
        if payload["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        state = _RunState(**json.loads(payload["state"]))
        order = BatchOrder(len(train), config.batch_size, config.seed, payload["epoch"], payload["offset"])
    resumed_from = state.step
    budget = config.max_minutes * 60 if config.max_minutes is not None else math.inf
    session_start = time.perf_counter()
    seconds_before = state.seconds

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - session_start

    def validate() -> None:
        model.eval()
        probs = scorer.score(valid_subset)
        auc = metrics.auc(valid_labels, probs)
        state.curve.append(
            {
                "step": state.step,
                "samples": state.samples_seen,
                "seconds": round(elapsed(), 3),
                "train_loss": float(np.mean(state.losses)) if state.losses else None,
                "valid_auc": auc,
                "valid_auc_ci95": list(metrics.bootstrap_auc_ci(valid_labels, probs)),
                "valid_samples": len(valid_labels),
            }
        )
        state.losses = []
        if auc > state.best_auc:
            state.best_auc, state.stale = auc, 0
            best_state.update(lora_state(model, adapter_name))
        else:
            state.stale += 1
        if checkpointing:
            partial = TrainResult(state.step, state.samples_seen, elapsed(), state.best_auc, state.curve)
            write_json_atomic(checkpointing.curve_path, curve_document(adapter_name, config, partial))

    def save() -> None:
        if checkpointing:
            state.seconds = elapsed()
            current = lora_state(model, adapter_name)
            _save_checkpoint(
                checkpointing.checkpoint_path,
                config,
                fingerprint,
                state,
                order,
                current,
                best_state,
                optimiser,
                scheduler,
            )

    stopped_by = _stop_reason(config, state, elapsed(), budget)
    bar = tqdm(
        total=config.max_steps,
        initial=state.step,
        desc=f"training {adapter_name}",
        disable=not progress,
        unit="step",
    )
    recent: list[float] = []  # for the progress bar only
    while stopped_by is None:
        batch = train.iloc[order.next()]
        state.losses.append(training_step(scorer, optimiser, batch))
        scheduler.step()
        state.step += 1
        state.samples_seen += len(batch)
        recent = [*recent[-19:], state.losses[-1]]
        bar.update(1)
        if on_step:
            on_step(state.step, config.max_steps)
        if state.step % config.eval_every == 0 or state.step == config.max_steps:
            validate()
        stopped_by = _stop_reason(config, state, elapsed(), budget)
        if stopped_by == "time_budget" and state.losses:
            validate()  # the weights since the last validation get their chance to be the best
        postfix = {"loss": f"{np.mean(recent):.3f}"}
        if state.curve:
            postfix["valid_auc"] = f"{state.curve[-1]['valid_auc']:.3f}"
        if math.isfinite(budget):
            postfix["budget_left"] = f"{max(0.0, budget - elapsed()) / 60:.1f}min"
        bar.set_postfix(postfix)
        if stopped_by is not None or state.step % (checkpointing.every_steps if checkpointing else 1) == 0:
            save()
    bar.close()
    model.eval()
    _load_tensors(model, best_state)  # restore the best weights seen on validation
    return TrainResult(
        state.step, state.samples_seen, elapsed(), state.best_auc, state.curve, stopped_by, resumed_from
    )


def _stop_reason(config: TrainConfig, state: _RunState, seconds: float, budget: float) -> str | None:
    if state.step >= config.max_steps:
        return "max_steps"
    if state.stale >= config.patience:
        return "early_stopping"
    if seconds >= budget:
        return "time_budget"
    return None
