"""Adapter bookkeeping in the multi-adapter peft model that holds the parent, and ``PeftMethod``, the base
of the built-in methods, which all leave their child beside the parent there."""

from __future__ import annotations

import copy
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel

from core.ml.metrics import ResourceMeter, parameter_count
from core.ml.training import trainable_parameters
from core.ml.unlearning.base import (
    ConfigT,
    UnlearningError,
    UnlearningInputs,
    UnlearningMethod,
    UnlearningReport,
)
from core.ml.unlearning.progress import Progress

SAMPLE_KEY = ["user_id", "item_id", "timestamp"]


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


def adapter_size(model: Any, name: str) -> int:
    """Number of LoRA parameters of adapter ``name`` (what trains when it trains)."""
    return parameter_count(lora_parameters(model, name))


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


@dataclass(frozen=True)
class Child:
    """The adapter a run makes: ``name`` in ``model``, the peft model that holds the parent (checked by
    ``peft_model``); the run reports its steps to ``progress``."""

    model: PeftModel
    name: str
    progress: Progress


class PeftMethod(UnlearningMethod[ConfigT]):
    """``run`` for every built-in method: checks the config's type and the inputs (``peft_model``), then
    calls ``unlearn`` with the child to make.  Subclasses implement ``unlearn``."""

    def run(
        self, inputs: UnlearningInputs, config: ConfigT, child_name: str, progress: Progress
    ) -> UnlearningReport:
        if not isinstance(config, self.config_class):
            raise UnlearningError(
                f"{self.name} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        return self.unlearn(inputs, config, Child(peft_model(inputs, child_name), child_name, progress))

    @abstractmethod
    def unlearn(self, inputs: UnlearningInputs, config: ConfigT, child: Child) -> UnlearningReport:
        """The method itself: leave ``child`` loaded in its model and report what was done."""

    def report(
        self, config: ConfigT, meter: ResourceMeter, steps: int, child: Child, details: dict[str, Any]
    ) -> UnlearningReport:
        """The report of a run measured by ``meter`` that took ``steps`` optimiser steps to make ``child``."""
        return UnlearningReport(
            method=self.name,
            config=config.to_dict(),
            seconds=meter.seconds,
            steps=steps,
            trainable_parameters=adapter_size(child.model, child.name),
            peak_memory_bytes=meter.peak_bytes,
            details={**details, "memory": meter.describe()},
        )
