"""NegGrad: gradient ascent on the forget set, with cross-entropy on a retain sample to hold utility.

The simplest approximate method: it raises the loss on F without a target for how far to go, so it
tends to overshoot (F ends up *less* likely than on unseen data, which is itself a membership signal).
"""

from __future__ import annotations

import torch

from core.ml.unlearning.base import register
from core.ml.unlearning.forget_retain import ForgetBatch, ForgetRetainConfig, ForgetRetainMethod
from core.ml.unlearning.losses import cross_entropy


@register
class NegGrad(ForgetRetainMethod[ForgetRetainConfig]):
    name = "neggrad"
    config_class = ForgetRetainConfig

    def forget_loss(self, forget: ForgetBatch, config: ForgetRetainConfig) -> torch.Tensor:
        return -cross_entropy(forget.logits, forget.labels)
