"""The template of the fine-tuning baselines (NegGrad, label flipping, NPO): a forget-side loss on the
forget set F plus cross-entropy on a retain sample R.  A baseline only says what its forget loss is."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import torch

from core.ml.metrics import ResourceMeter
from core.ml.unlearning.adapters import Child, PeftMethod, activate, clone_adapter
from core.ml.unlearning.base import UnlearningInputs, UnlearningReport, require
from core.ml.unlearning.losses import cross_entropy, frame_logits, joint_logits, rows
from core.ml.unlearning.optimisation import OptimConfig, budget, optimise, paired_batches, retain_sample


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


ForgetRetainConfigT = TypeVar("ForgetRetainConfigT", bound=ForgetRetainConfig)


@dataclass(frozen=True)
class ForgetBatch:
    """What a forget loss reads of one batch of F."""

    logits: torch.Tensor  # [B, 2] the child's label logits (they carry the gradient)
    labels: np.ndarray  # gold labels, 1 = positive
    reference: torch.Tensor | None  # [B, 2] the parent's fixed logits, for a method that ``uses_reference``


class ForgetRetainMethod(PeftMethod[ForgetRetainConfigT]):
    """The child starts as a copy of the parent and takes ``config.epochs`` passes over F, each step one
    forward pass over a forget batch and a retain batch:
    ``forget_weight * forget_loss(F batch) + retain_weight * CE(R batch)``.  Subclasses say what
    ``forget_loss`` is; set ``uses_reference`` to get the parent's fixed logits on F (computed once)."""

    uses_reference: ClassVar[bool] = False

    @abstractmethod
    def forget_loss(self, forget: ForgetBatch, config: ForgetRetainConfigT) -> torch.Tensor:
        """The loss on a forget batch (lower means more forgotten)."""

    def unlearn(
        self, inputs: UnlearningInputs, config: ForgetRetainConfigT, child: Child
    ) -> UnlearningReport:
        scorer, model = inputs.scorer, child.model
        with ResourceMeter(scorer.loaded.device) as meter:
            torch.manual_seed(config.seed)
            forget = inputs.forget.reset_index(drop=True)
            retain = retain_sample(inputs.retain, len(forget), config.retain_ratio, config.seed)
            reference = None
            if self.uses_reference:
                activate(model, inputs.parent_name, trainable=False)
                reference = frame_logits(scorer, forget)
            clone_adapter(model, inputs.parent_name, child.name)
            plan = budget(len(forget), config.epochs, config)
            pairs = paired_batches(forget, retain, plan.batch_size, config.seed)

            def loss_at(step: int) -> torch.Tensor:
                forget_batch, retain_batch = next(pairs)
                forget_logits, retain_logits = joint_logits(scorer, forget_batch, retain_batch)
                fixed = reference[rows(forget_batch)] if reference is not None else None
                labels = forget_batch["label"].to_numpy()
                forget_term = self.forget_loss(ForgetBatch(forget_logits, labels, fixed), config)
                retain_term = cross_entropy(retain_logits, retain_batch["label"])
                return config.forget_weight * forget_term + config.retain_weight * retain_term

            losses = optimise(
                scorer,
                child.name,
                plan.steps,
                config.learning_rate,
                loss_at,
                "unlearn",
                child.progress,
                max_grad_norm=config.max_grad_norm,
            )
        details = {
            "forget_samples": len(forget),
            "retain_samples": len(retain),
            "batch_size": plan.batch_size,
            "losses": losses,
        }
        return self.report(config, meter, plan.steps, child, details)
