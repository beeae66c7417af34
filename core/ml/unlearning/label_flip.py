"""Label flipping: fine-tune on the forget set with its labels flipped, plus the retain sample.

The E2URec paper's reference code calls this baseline "Bad-T"; it is not Chundawat et al.'s bad-teacher
distillation, so it goes by what it does.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from core.ml.unlearning.base import register
from core.ml.unlearning.common import ForgetRetainConfig, ForgetRetainMethod, cross_entropy


@register
class LabelFlip(ForgetRetainMethod):
    name = "label_flip"
    config_class = ForgetRetainConfig

    def forget_loss(
        self, logits: torch.Tensor, batch: pd.DataFrame, reference: torch.Tensor | None, config: Any
    ) -> torch.Tensor:
        return cross_entropy(logits, 1 - batch["label"].to_numpy())
