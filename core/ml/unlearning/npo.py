"""NPO, Negative Preference Optimization (Zhang, Lin, Bai & Mei, 2024), with cross-entropy on retain data.

Why it is here: it is the standard approximate baseline of current LLM-unlearning benchmarks (TOFU, MUSE,
open-unlearning), and it fixes NegGrad's flaw in one line.  Its forget loss
``(2 / beta) * log(1 + (p_theta(y|x) / p_parent(y|x)) ** beta)`` is gradient ascent whose push fades once
the gold label is already less likely than under the parent, so it does not run away.  It needs only the
parent's logits on F, computed once, so it costs what NegGrad costs.  Beside E2URec it asks whether the
teachers (an augmented model, a distillation target) earn their extra work over a well-behaved ascent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.ml.unlearning.base import register, require
from core.ml.unlearning.forget_retain import ForgetBatch, ForgetRetainConfig, ForgetRetainMethod
from core.ml.unlearning.losses import gold_log_prob


@dataclass(frozen=True)
class NPOConfig(ForgetRetainConfig):
    beta: float = 0.1  # the paper's default; as beta -> 0 NPO becomes gradient ascent

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.beta > 0, self, f"beta must be > 0, got {self.beta}")


def npo_loss(logits: torch.Tensor, reference: torch.Tensor, labels: np.ndarray, beta: float) -> torch.Tensor:
    """Mean over rows of ``-(2 / beta) * log sigmoid(-beta * (log p(y) - log p_ref(y)))``."""
    ratio = gold_log_prob(logits, labels) - gold_log_prob(reference.to(logits.device), labels)
    return -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()


@register
class NPO(ForgetRetainMethod[NPOConfig]):
    name = "npo"
    config_class = NPOConfig
    uses_reference = True

    def forget_loss(self, forget: ForgetBatch, config: NPOConfig) -> torch.Tensor:
        if forget.reference is None:
            raise RuntimeError("NPO needs the parent's logits on the forget set")
        return npo_loss(forget.logits, forget.reference, forget.labels, config.beta)
