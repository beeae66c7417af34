"""The optimisation every fine-tuning-style method runs: its config, the step budget (passes over the
forget set, so that the cost follows the request), the data each step draws, and the loop itself."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
import torch

from core.ml.scoring import Scorer
from core.ml.training import batches, trainable_parameters
from core.ml.unlearning.adapters import activate
from core.ml.unlearning.base import MethodConfig, UnlearningError, require
from core.ml.unlearning.progress import Progress


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


def optimise(
    scorer: Scorer,
    adapter: str,
    steps: int,
    learning_rate: float,
    loss_at: Callable[[int], torch.Tensor],
    phase: str,
    progress: Progress,
    max_grad_norm: float | None = None,
) -> list[float]:
    """``steps`` AdamW steps on adapter ``adapter``'s LoRA tensors, minimising ``loss_at(step)`` (step counts
    from 1), reported to ``progress`` as ``phase``.  Only that adapter trains; it is left active and
    frozen.  Returns the loss of every step."""
    model = scorer.loaded.model
    activate(model, adapter, trainable=True)
    params = trainable_parameters(model)
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    losses: list[float] = []
    model.train()
    with progress.phase(phase, steps, label=f"{adapter} {phase}") as step_done:
        for step in range(1, steps + 1):
            loss = loss_at(step)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimiser.step()
            losses.append(float(loss.detach()))
            step_done(step, losses[-1])
    model.eval()
    activate(model, adapter, trainable=False)
    return losses
