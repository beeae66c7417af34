"""Pieces every unlearning method shares: adapter bookkeeping in a multi-adapter peft model, fixed
(teacher) logits computed once, the step budget, the loss terms and one optimisation loop.

Every logit here is the [B, 2] pair (positive word, negative word) at the answer position that
``Scorer.logits`` returns, so training, teachers and serving all read the same two numbers.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from peft import PeftModel
from tqdm.auto import tqdm

from core.ml.metrics import ResourceMeter, parameter_count
from core.ml.scoring import Scorer
from core.ml.training import batches, label_targets, trainable_parameters
from core.ml.unlearning.base import (
    MethodConfig,
    ProgressFn,
    UnlearningError,
    UnlearningInputs,
    UnlearningMethod,
    UnlearningReport,
)

SAMPLE_KEY = ["user_id", "item_id", "timestamp"]


# ---------------------------------------------------------------------------------------------- configs


def require(condition: bool, config: MethodConfig, message: str) -> None:
    """Raise ``UnlearningError`` naming the config class when ``condition`` is false."""
    if not condition:
        raise UnlearningError(f"{type(config).__name__}: {message}")


@dataclass(frozen=True)
class OptimConfig(MethodConfig):
    """What every fine-tuning-style method needs: a learning rate, a batch size and the retain sample's
    size as a multiple of |F|.  Step budgets are passes over the forget set F (so that the cost grows with
    the request, not with the training data); each method names its own."""

    learning_rate: float = 1e-3
    batch_size: int = 8
    retain_ratio: float = 1.0  # |R| = retain_ratio * |F|, drawn from the retain data with ``seed``
    min_steps: int = 4  # per phase; a small request gets smaller batches rather than a single update
    max_steps: int | None = None  # optional cap on the derived budget (huge requests)
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        require(self.learning_rate > 0, self, f"learning_rate must be > 0, got {self.learning_rate}")
        require(self.batch_size >= 1, self, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.retain_ratio > 0, self, f"retain_ratio must be > 0, got {self.retain_ratio}")
        require(self.min_steps >= 1, self, f"min_steps must be >= 1, got {self.min_steps}")
        require(
            self.max_steps is None or self.max_steps >= 1, self, f"max_steps must be >= 1: {self.max_steps}"
        )
        require(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            self,
            f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}",
        )


@dataclass(frozen=True)
class Budget:
    steps: int
    batch_size: int


def budget(samples: int, epochs: float, config: OptimConfig) -> Budget:
    """``epochs`` passes over ``samples`` samples in batches of ``config.batch_size``.  When that makes
    fewer than ``config.min_steps`` updates (a small request: one step cannot distil a teacher), the
    batch shrinks so that the same passes take ``min_steps`` updates; the cost stays proportional to the
    request.  At most ``config.max_steps`` steps."""
    passes = epochs * samples
    batch = config.batch_size
    if math.ceil(passes / batch) < config.min_steps:
        batch = max(1, math.ceil(passes / config.min_steps))
    steps = max(1, math.ceil(passes / batch))
    if config.max_steps is not None:
        steps = min(steps, config.max_steps)
    return Budget(steps, batch)


# ---------------------------------------------------------------------------------------------- adapters


def peft_model(inputs: UnlearningInputs, child_name: str) -> PeftModel:
    """The scorer's peft model, after checking that the parent is loaded, the child name is free, and the
    forget and retain data do not overlap."""
    model = inputs.scorer.loaded.model
    if not isinstance(model, PeftModel) or inputs.parent_name not in model.peft_config:
        raise UnlearningError(f"parent adapter {inputs.parent_name!r} is not loaded in the scorer's model")
    if child_name in model.peft_config:
        raise UnlearningError(f"adapter name {child_name!r} is already taken")
    if child_name == inputs.parent_name or "." in child_name:
        raise UnlearningError(f"bad child adapter name {child_name!r}")
    overlap = inputs.forget[SAMPLE_KEY].merge(inputs.retain[SAMPLE_KEY], on=SAMPLE_KEY)
    if not overlap.empty:
        raise UnlearningError(f"{len(overlap)} forget sample(s) are also in the retain data")
    return model


def lora_parameters(model: Any, name: str) -> list[torch.nn.Parameter]:
    return [p for key, p in model.named_parameters() if "lora_" in key and f".{name}." in key]


def activate(model: PeftModel, name: str, trainable: bool) -> None:
    """Make adapter ``name`` the active one.  If ``trainable``, its LoRA tensors (and nothing else) require
    grad; otherwise nothing does.  (peft's ``set_adapter`` marks the activated adapter trainable, which
    would unfreeze a parent or a teacher that must stay fixed.)"""
    model.set_adapter(name, inference_mode=not trainable)
    own = {id(p) for p in lora_parameters(model, name)} if trainable else set()
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in own)
    if trainable:
        trainable_parameters(model)  # raises unless exactly LoRA tensors train


def _add_like(model: PeftModel, like: str, name: str) -> None:
    config = copy.deepcopy(model.peft_config[like])
    config.inference_mode = False
    model.add_adapter(name, config)


def fresh_adapter(model: PeftModel, like: str, name: str, seed: int) -> None:
    """A freshly initialised adapter ``name`` with the same shape (rank, targets) as adapter ``like``."""
    torch.manual_seed(seed)
    _add_like(model, like, name)


def clone_adapter(model: PeftModel, source: str, name: str) -> None:
    """A new adapter ``name`` holding a copy of adapter ``source``'s LoRA tensors."""
    _add_like(model, source, name)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in named.items():
            if "lora_" in key and f".{source}." in key:
                named[key.replace(f".{source}.", f".{name}.")].copy_(value)


# ---------------------------------------------------------------------------------------------- data


def retain_sample(retain: pd.DataFrame, forget_size: int, ratio: float, seed: int) -> pd.DataFrame:
    """``ratio * forget_size`` retain samples drawn with ``seed`` (all of them if there are fewer)."""
    if retain.empty:
        raise UnlearningError("retain data is empty")
    n = min(len(retain), max(1, round(ratio * forget_size)))
    return retain.sample(n=n, random_state=seed).reset_index(drop=True)


def paired_batches(
    forget: pd.DataFrame, retain: pd.DataFrame, batch_size: int, seed: int
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Endless (forget batch, retain batch) pairs, each side reshuffled every pass over it.  Row labels
    are the frames' own index, so fixed per-row tensors can be looked up with ``batch.index``."""
    return zip(batches(forget, batch_size, seed), batches(retain, batch_size, seed + 1), strict=False)


def rows(batch: pd.DataFrame) -> torch.Tensor:
    """The batch's row labels as an index into tensors computed once for the whole (0..n-1 indexed) frame."""
    return torch.tensor(batch.index.to_numpy(), dtype=torch.long)


@torch.no_grad()
def frame_logits(scorer: Scorer, frame: pd.DataFrame) -> torch.Tensor:
    """[N, 2] label logits of the active adapter for every row, in row order (computed once: fixed)."""
    scorer.loaded.model.eval()
    sequences = scorer.encode_frame(frame)
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k]))  # little padding per batch
    out = torch.empty((len(sequences), 2))
    for start in range(0, len(order), scorer.batch_size):
        chunk = order[start : start + scorer.batch_size]
        out[chunk] = scorer.logits([sequences[k] for k in chunk]).cpu()
    return out


def joint_logits(scorer: Scorer, *frames: pd.DataFrame) -> list[torch.Tensor]:
    """One differentiable forward pass over several batches together; returns their logits apart."""
    sequences = [seq for frame in frames for seq in scorer.encode_frame(frame)]
    logits = scorer.logits(sequences)
    return list(torch.split(logits, [len(frame) for frame in frames]))


# ---------------------------------------------------------------------------------------------- losses


def cross_entropy(logits: torch.Tensor, labels: pd.Series | np.ndarray) -> torch.Tensor:
    """Cross-entropy against the gold labels (1 = positive word)."""
    return F.cross_entropy(logits, label_targets(labels).to(logits.device))


def gold_log_prob(logits: torch.Tensor, labels: pd.Series | np.ndarray) -> torch.Tensor:
    """log P(gold label) per row under the 2-way softmax of ``logits``."""
    targets = label_targets(labels).to(logits.device)
    return F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the tempered 2-way softmaxes, times T^2 (Hinton's scaling keeps the
    gradient size independent of T); mean over rows."""
    log_student = F.log_softmax(student / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.to(student.device) / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


# ---------------------------------------------------------------------------------------------- loop


def optimise(
    scorer: Scorer,
    adapter: str,
    steps: int,
    learning_rate: float,
    loss_at: Callable[[int], torch.Tensor],
    phase: str,
    on_progress: ProgressFn | None = None,
    progress_bar: bool = False,
    max_grad_norm: float | None = None,
) -> list[float]:
    """``steps`` AdamW steps on adapter ``adapter``'s LoRA tensors, minimising ``loss_at(step)`` (step counts
    from 1).  Only that adapter trains; it is left active and frozen.  Returns the loss of every step."""
    model = scorer.loaded.model
    activate(model, adapter, trainable=True)
    params = trainable_parameters(model)
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    losses: list[float] = []
    bar = tqdm(total=steps, desc=f"{adapter} {phase}", disable=not progress_bar, unit="step")
    model.train()
    for step in range(1, steps + 1):
        loss = loss_at(step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimiser.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_progress:
            on_progress(phase, step, steps)
    bar.close()
    model.eval()
    activate(model, adapter, trainable=False)
    return losses


def finish_report(
    name: str,
    config: MethodConfig,
    meter: ResourceMeter,
    steps: int,
    trainable: int,
    details: dict[str, Any],
) -> UnlearningReport:
    return UnlearningReport(
        method=name,
        config=config.to_dict(),
        seconds=meter.seconds,
        steps=steps,
        trainable_parameters=trainable,
        peak_memory_bytes=meter.peak_bytes,
        details={**details, "memory": meter.describe()},
    )


def adapter_size(model: Any, name: str) -> int:
    """Number of LoRA parameters of adapter ``name`` (what trains when it trains)."""
    return parameter_count(lora_parameters(model, name))


# ---------------------------------------------------------------------------------------------- methods


class PeftMethod(UnlearningMethod):
    """``run`` for every built-in method: checks the config's type and the inputs (``peft_model``), then
    calls ``unlearn`` with the peft model.  Subclasses implement ``unlearn``."""

    def run(
        self,
        inputs: UnlearningInputs,
        config: MethodConfig,
        child_name: str,
        on_progress: ProgressFn | None = None,
        progress_bar: bool = False,
    ) -> UnlearningReport:
        if not isinstance(config, self.config_class):
            raise UnlearningError(
                f"{self.name} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        model = peft_model(inputs, child_name)
        return self.unlearn(inputs, config, child_name, model, on_progress, progress_bar)

    @abstractmethod
    def unlearn(
        self,
        inputs: UnlearningInputs,
        config: Any,
        child_name: str,
        model: PeftModel,
        on_progress: ProgressFn | None,
        progress_bar: bool,
    ) -> UnlearningReport:
        """The method itself, given the peft model that holds the parent."""


# ---------------------------------------------------------------------------------------------- template


@dataclass(frozen=True)
class ForgetRetainConfig(OptimConfig):
    """A forget-side loss on F plus cross-entropy on the retain sample R, weighted, for ``epochs`` passes
    over F (2 by default: the same as E2URec's student, phase 1 plus phase 2)."""

    epochs: float = 2.0
    forget_weight: float = 1.0
    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.epochs > 0, self, f"epochs must be > 0, got {self.epochs}")
        require(self.forget_weight > 0, self, f"forget_weight must be > 0, got {self.forget_weight}")
        require(self.retain_weight >= 0, self, f"retain_weight must be >= 0, got {self.retain_weight}")


class ForgetRetainMethod(PeftMethod):
    """Template of the fine-tuning baselines: the child starts as a copy of the parent and takes
    ``config.epochs`` passes over F, each step one forward pass over a forget batch and a retain batch:
    ``forget_weight * forget_loss(F batch) + retain_weight * CE(R batch)``.  Subclasses say what
    ``forget_loss`` is; set ``uses_reference`` to get the parent's fixed logits on F (computed once)."""

    config_class: ClassVar[type[MethodConfig]] = ForgetRetainConfig
    uses_reference: ClassVar[bool] = False

    @abstractmethod
    def forget_loss(
        self, logits: torch.Tensor, batch: pd.DataFrame, reference: torch.Tensor | None, config: Any
    ) -> torch.Tensor:
        """The loss on a forget batch (lower means more forgotten)."""

    def unlearn(
        self,
        inputs: UnlearningInputs,
        config: Any,
        child_name: str,
        model: PeftModel,
        on_progress: ProgressFn | None,
        progress_bar: bool,
    ) -> UnlearningReport:
        scorer = inputs.scorer
        with ResourceMeter(scorer.loaded.device) as meter:
            torch.manual_seed(config.seed)
            forget = inputs.forget.reset_index(drop=True)
            retain = retain_sample(inputs.retain, len(forget), config.retain_ratio, config.seed)
            reference = None
            if self.uses_reference:
                activate(model, inputs.parent_name, trainable=False)
                reference = frame_logits(scorer, forget)
            clone_adapter(model, inputs.parent_name, child_name)
            plan = budget(len(forget), config.epochs, config)
            pairs = paired_batches(forget, retain, plan.batch_size, config.seed)

            def loss_at(step: int) -> torch.Tensor:
                forget_batch, retain_batch = next(pairs)
                forget_logits, retain_logits = joint_logits(scorer, forget_batch, retain_batch)
                fixed = reference[rows(forget_batch)] if reference is not None else None
                forget_term = self.forget_loss(forget_logits, forget_batch, fixed, config)
                retain_term = cross_entropy(retain_logits, retain_batch["label"])
                return config.forget_weight * forget_term + config.retain_weight * retain_term

            losses = optimise(
                scorer,
                child_name,
                plan.steps,
                config.learning_rate,
                loss_at,
                "unlearn",
                on_progress=on_progress,
                progress_bar=progress_bar,
                max_grad_norm=config.max_grad_norm,
            )
        details = {
            "forget_samples": len(forget),
            "retain_samples": len(retain),
            "batch_size": plan.batch_size,
            "losses": losses,
        }
        return finish_report(self.name, config, meter, plan.steps, adapter_size(model, child_name), details)
