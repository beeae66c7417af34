"""The one interface every unlearning method shares, and the registry that picks a method by name.

A method takes a parent adapter (already loaded in ``UnlearningInputs.scorer``'s model under
``parent_name``), a forget set, retain data and its typed config, and leaves a *child* adapter loaded
under ``child_name`` in the same model (the parent stays loaded and unchanged).  It returns a report of
what it did.  Saving, verifying and registering the child are the caller's business.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

import pandas as pd

from core.ml.scoring import Scorer
from core.ml.unlearning.progress import Progress


class UnlearningError(ValueError):
    """Invalid input or configuration for an unlearning run."""


@dataclass(frozen=True)
class MethodConfig:
    """Base for method configs: validated in ``__post_init__``, JSON round-trip with to/from_dict."""

    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise UnlearningError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}")
        return cls(**raw)


def require(condition: bool, config: MethodConfig, message: str) -> None:
    """Raise ``UnlearningError`` naming the config class when ``condition`` is false."""
    if not condition:
        raise UnlearningError(f"{type(config).__name__}: {message}")


ConfigT = TypeVar("ConfigT", bound=MethodConfig)


@dataclass
class UnlearningInputs:
    scorer: Scorer  # base model with the parent adapter loaded as ``parent_name``
    parent_name: str
    forget: pd.DataFrame  # training samples to forget (columns of core.ml.data.SAMPLE_COLUMNS)
    retain: pd.DataFrame  # training samples to keep (the rest of the training split)
    valid: pd.DataFrame  # held-out samples, for methods that early-stop (never the test split)


@dataclass
class UnlearningReport:
    method: str
    config: dict[str, Any]
    seconds: float  # wall time of everything the method needed (augmented model fitting included)
    steps: int
    trainable_parameters: int
    peak_memory_bytes: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UnlearningMethod(ABC, Generic[ConfigT]):
    """Subclass as ``UnlearningMethod[ItsConfig]``, set ``name`` and ``config_class = ItsConfig``, implement
    ``run``; register with ``@register``."""

    name: ClassVar[str]
    config_class: type[ConfigT]
    # False only for a method that never reads F (the exact retrain): it may run when F's rows are gone
    needs_forget_set: ClassVar[bool] = True

    @abstractmethod
    def run(
        self, inputs: UnlearningInputs, config: ConfigT, child_name: str, progress: Progress
    ) -> UnlearningReport:
        """Leave the child adapter loaded as ``child_name`` and report what was done."""


METHODS: dict[str, type[UnlearningMethod[Any]]] = {}

MethodT = TypeVar("MethodT", bound=type[UnlearningMethod[Any]])


def register(cls: MethodT) -> MethodT:
    if cls.name in METHODS:
        raise ValueError(f"unlearning method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> UnlearningMethod[Any]:
    # importing the package registers every built-in method
    import core.ml.unlearning  # noqa: F401

    if name not in METHODS:
        raise UnlearningError(f"unknown unlearning method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]()


def run_unlearning(
    method_name: str,
    inputs: UnlearningInputs,
    config: dict[str, Any],
    child_name: str,
    progress: Progress | None = None,
) -> UnlearningReport:
    """Look up ``method_name``, validate ``config`` (a JSON dict) into its typed config, and run it,
    reporting to ``progress`` (``None``: nowhere)."""
    method = get_method(method_name)
    if inputs.forget.empty and method.needs_forget_set:
        raise UnlearningError(f"forget set is empty ({method_name} needs one)")
    typed = method.config_class.from_dict(config)
    # passed by position: a method may name its progress argument as it likes
    return method.run(inputs, typed, child_name, progress or Progress())
