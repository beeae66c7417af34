"""Retrain: the exact method.  A fresh adapter (same LoRA shape as the parent) trained from the base on
the retain data alone, with the parent's own training recipe (``TrainConfig``), early-stopped on the
validation split.  It never saw F, so it is what every approximate method is judged against; it is
also the production fallback when a candidate fails verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Self

from core.ml.metrics import ResourceMeter
from core.ml.model import is_seq2seq
from core.ml.training import TrainConfig, train_adapter
from core.ml.unlearning.adapters import Child, PeftMethod, activate, fresh_adapter
from core.ml.unlearning.base import (
    MethodConfig,
    UnlearningError,
    UnlearningInputs,
    UnlearningReport,
    register,
)


@dataclass(frozen=True)
class RetrainConfig(MethodConfig):
    """``train``: the parent's recipe (give the one adapter v1 was trained with); ``seed`` seeds the
    fresh adapter's initialisation, ``train.seed`` the data order, as for v1."""

    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise UnlearningError(
                f"RetrainConfig: train must be a TrainConfig, not {type(self.train).__name__}"
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        values = dict(raw)
        unknown = set(values) - {"seed", "train"}
        if unknown:
            raise UnlearningError(f"RetrainConfig: unknown option(s) {sorted(unknown)}")
        try:
            train = TrainConfig.from_dict(values.pop("train", {}))
        except (TypeError, ValueError) as error:
            raise UnlearningError(f"RetrainConfig: bad train recipe: {error}") from None
        return cls(train=train, **values)


def _check_shape(model: Any, parent: str, train: TrainConfig) -> None:
    """The child must be hot-swappable with the parent: same rank, scaling and target modules."""
    parent_config = model.peft_config[parent]
    spec = train.lora
    targets = spec.targets_for(is_seq2seq(model))
    same = (
        parent_config.r == spec.r
        and parent_config.lora_alpha == spec.alpha
        and set(parent_config.target_modules) == set(targets)
    )
    if not same:
        raise UnlearningError(
            f"retrain recipe's LoRA (r={spec.r}, alpha={spec.alpha}, targets={sorted(targets)}) "
            f"differs from the parent's (r={parent_config.r}, alpha={parent_config.lora_alpha}, "
            f"targets={sorted(parent_config.target_modules)})"
        )


@register
class Retrain(PeftMethod[RetrainConfig]):
    name = "retrain"
    config_class = RetrainConfig
    needs_forget_set = False  # trained from the base on the retain data alone

    def unlearn(self, inputs: UnlearningInputs, config: RetrainConfig, child: Child) -> UnlearningReport:
        model = child.model
        _check_shape(model, inputs.parent_name, config.train)
        if inputs.retain.empty or inputs.valid.empty:
            raise UnlearningError("retrain needs non-empty retain and validation data")
        scorer = inputs.scorer
        with ResourceMeter(scorer.loaded.device) as meter:
            fresh_adapter(model, inputs.parent_name, child.name, config.seed)
            activate(model, child.name, trainable=True)
            result = train_adapter(
                scorer,
                child.name,
                inputs.retain,
                inputs.valid,
                config.train,
                progress=child.progress.bar,
                on_step=partial(child.progress.update, "train"),
            )
            activate(model, child.name, trainable=False)
        details = {
            "retain_samples": len(inputs.retain),
            "best_valid_auc": result.best_valid_auc,
            "curve": result.curve,
        }
        return self.report(config, meter, result.steps, child, details)
