"""NegGrad: gradient ascent on the forget set, with cross-entropy on a retain sample to hold utility.

The simplest approximate method: it raises the loss on F without a target for how far to go, so it
tends to overshoot (F ends up *less* likely than on unseen data, which is itself a membership signal).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from core.ml.unlearning.base import register
from core.ml.unlearning.common import ForgetRetainConfig, ForgetRetainMethod, cross_entropy


@register
class NegGrad(ForgetRetainMethod):
    name = "neggrad"
    config_class = ForgetRetainConfig

    def forget_loss(
        self, logits: torch.Tensor, batch: pd.DataFrame, reference: torch.Tensor | None, config: Any
    ) -> torch.Tensor:
        return -cross_entropy(logits, batch["label"])
