"""Label flipping: fine-tune on the forget set with its labels flipped, plus the retain sample.

The E2URec paper's reference code calls this baseline "Bad-T"; it is not Chundawat et al.'s bad-teacher
distillation, so it goes by what it does.
"""

from __future__ import annotations

import torch

from core.ml.unlearning.base import register
from core.ml.unlearning.forget_retain import ForgetBatch, ForgetRetainConfig, ForgetRetainMethod
from core.ml.unlearning.losses import cross_entropy


@register
class LabelFlip(ForgetRetainMethod[ForgetRetainConfig]):
    name = "label_flip"
    config_class = ForgetRetainConfig

    def forget_loss(self, forget: ForgetBatch, config: ForgetRetainConfig) -> torch.Tensor:
        return cross_entropy(forget.logits, 1 - forget.labels)
