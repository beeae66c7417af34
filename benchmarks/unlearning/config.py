"""What one unlearning benchmark run is: the scaled data, the parent's recipe, the methods, the seed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.ml.model import LoraSpec, ModelConfig
from core.ml.training import TrainConfig
from core.ml.unlearning import METHODS

PARENT = "parent"
REFERENCE = "retrain"
DEFAULT_METHODS = ("retrain", "e2urec", "neggrad", "label_flip", "npo")


class BenchmarkError(ValueError):
    """A benchmark configuration or data set that cannot give the figures asked for."""


@dataclass(frozen=True)
class BenchSizes:
    """How far the data is scaled down (None: keep everything).

    ``users``: keep this many users (drawn with the seed among those with training samples) in the
    training split; ``train_per_user``: keep each kept user's most recent N training samples;
    ``test_samples``: a random subset of the test split for utility.
    """

    users: int | None = None
    train_per_user: int | None = None
    test_samples: int | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and value < 1:
                raise BenchmarkError(f"{name} must be >= 1 or None, got {value}")


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run.  ``parent`` is the v1 recipe (Retrain reuses it unchanged); with ``parent_epochs``
    its ``max_steps`` becomes that many passes over the (scaled) training split, with ``parent_evals``
    early-stopping evaluations on the validation split spread over them.
    The forget set is ``forget_users`` users if given, else ``forget_fraction`` of the users (at least one).
    ``method_configs`` holds per-method JSON overrides of the methods' defaults."""

    model: ModelConfig
    parent: TrainConfig
    parent_epochs: float | None = None
    parent_evals: int = 2
    sizes: BenchSizes = field(default_factory=BenchSizes)
    forget_fraction: float = 0.05
    forget_users: int | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
    method_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    bootstrap_rounds: int = 500
    seed: int = 0
    setting: str = "full"

    def __post_init__(self) -> None:
        if not 0 < self.forget_fraction < 1:
            raise BenchmarkError(f"forget_fraction must be in (0, 1), got {self.forget_fraction}")
        if self.forget_users is not None and self.forget_users < 1:
            raise BenchmarkError(f"forget_users must be >= 1, got {self.forget_users}")
        if self.parent_epochs is not None and self.parent_epochs <= 0:
            raise BenchmarkError(f"parent_epochs must be > 0, got {self.parent_epochs}")
        if self.parent_evals < 1:
            raise BenchmarkError(f"parent_evals must be >= 1, got {self.parent_evals}")
        if REFERENCE not in self.methods:
            raise BenchmarkError(f"{REFERENCE!r} must be among the methods: it is the reference")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise BenchmarkError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise BenchmarkError(f"a method is listed twice: {self.methods}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model": self.model.to_dict()}  # the model's own (no prompt_file when None)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BenchConfig:
        """The config as ``to_dict`` wrote it into a result file."""
        model = raw["model"]
        return cls(
            **{
                **raw,
                "model": ModelConfig(**{**model, "label_words": tuple(model["label_words"])}),
                "parent": TrainConfig.from_dict(raw["parent"]),
                "sizes": BenchSizes(**raw["sizes"]),
                "methods": tuple(raw["methods"]),
            }
        )


def quick_config(model: ModelConfig, seed: int = 0, **overrides: Any) -> BenchConfig:
    """The 2-core CPU setting: 20 users x their 4 most recent training samples (80), four passes of the
    parent over them (40 steps of 8 at lr 2e-3, so that it memorises its training samples and there is
    something to forget), 100 test samples.  Measured with SmolLM2 on the shared 2-core CPU (1 torch
    thread): ~10 s per training step of 8, ~0.7 s per scored sample, about 21 minutes in all."""
    parent = TrainConfig(
        lora=LoraSpec(), learning_rate=2e-3, batch_size=8, patience=2, valid_samples=32, seed=seed
    )
    values: dict[str, Any] = {
        "model": model,
        "parent": parent,
        "parent_epochs": 4.0,
        "parent_evals": 2,
        "sizes": BenchSizes(users=20, train_per_user=4, test_samples=100),
        "seed": seed,
        "setting": "quick",
    }
    return BenchConfig(**{**values, **overrides})


def full_config(model: ModelConfig, seed: int = 0, **overrides: Any) -> BenchConfig:
    """The GPU setting: all users and training samples, the whole test split, one pass of the parent over
    the training split in batches of 32."""
    parent = TrainConfig(
        lora=LoraSpec(),
        learning_rate=1e-3,
        batch_size=32,
        eval_every=500,
        patience=3,
        valid_samples=2000,
        seed=seed,
    )
    values: dict[str, Any] = {
        "model": model,
        "parent": parent,
        "parent_epochs": 1.0,
        "seed": seed,
        "setting": "full",
    }
    return BenchConfig(**{**values, **overrides})
