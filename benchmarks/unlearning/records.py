"""The typed result of one unlearning benchmark run, as written to (and read back from) its JSON file."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from benchmarks.report import Machine, evaluation_from_dict, interval, number
from benchmarks.unlearning.config import BenchConfig
from benchmarks.unlearning.data import DataSizes
from core.ml.evaluation import Evaluation

TO_RETRAIN = "_to_retrain"  # JSON key suffix of a divergence to Retrain's predictions


class Role(StrEnum):
    BEFORE = "before"  # the parent: the model before unlearning
    EXACT = "exact"  # Retrain: the reference every approximate method is compared with
    APPROXIMATE = "approximate"


@dataclass(frozen=True)
class ForgetFigures:
    """What a model does on the forget set F (``samples`` rows), against the parent and Retrain.

    ``gold_prob_*``: mean probability of the gold label on F with the parent (before) and this model
    (after), and this model's on the unseen sample; ``mia_auc``: loss-based membership inference, the first
    ``mia_samples_each`` rows of F (seeded order) against as many unseen ones; ``to_retrain``: each
    registered divergence (``core.ml.metrics.DIVERGENCES``) of its predictions on F from Retrain's."""

    samples: int
    gold_prob_before: float
    gold_prob_after: float
    unseen_gold_prob: float
    mia_samples_each: int
    mia_auc: float
    mia_auc_ci95: tuple[float, float]
    to_retrain: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        del values["to_retrain"]
        return values | {name + TO_RETRAIN: value for name, value in self.to_retrain.items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ForgetFigures:
        plain = {k: v for k, v in raw.items() if not k.endswith(TO_RETRAIN)}
        divergences = {
            k.removesuffix(TO_RETRAIN): number(v) for k, v in raw.items() if k.endswith(TO_RETRAIN)
        }
        figures = {"mia_auc": number(plain["mia_auc"]), "mia_auc_ci95": interval(plain["mia_auc_ci95"])}
        return cls(**{**plain, **figures}, to_retrain=divergences)


@dataclass(frozen=True)
class MethodRecord:
    """One model's run and figures: its cost (``seconds``, ``steps``, ``trainable_parameters``,
    ``peak_memory_bytes``, for the parent its training), the config and diagnostics it reported, utility
    on the test split, and what it does on F.  ``seconds_vs_retrain``: its seconds over Retrain's."""

    method: str
    role: Role
    config: dict[str, Any]
    seconds: float
    steps: int
    trainable_parameters: int
    peak_memory_bytes: int
    details: dict[str, Any]
    test: Evaluation
    forget: ForgetFigures
    seconds_vs_retrain: float | None = None

    @property
    def label(self) -> str:
        """The method's name, marked when it is the model before unlearning."""
        return self.method + (" (before)" if self.role == Role.BEFORE else "")

    def to_dict(self) -> dict[str, Any]:
        test = self.test.as_dict()
        del test["name"]  # the record's own method
        return {
            **{k: getattr(self, k) for k in self.__dataclass_fields__},
            "role": str(self.role),
            "test": test,
            "forget": self.forget.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MethodRecord:
        return cls(
            **{
                **raw,
                "role": Role(raw["role"]),
                "test": evaluation_from_dict(raw["test"], name=raw["method"]),
                "forget": ForgetFigures.from_dict(raw["forget"]),
            }
        )


@dataclass(frozen=True)
class Aim:
    """One of issue 3's aims for E2URec: its value, target, verdict and margin (positive: met by,
    negative: missed by)."""

    aim: str
    value: float
    target: str
    met: bool
    margin: float


@dataclass(frozen=True)
class UnlearningResult:
    """A whole run: where, on which data and config, every method's record (the parent first), the aims."""

    setting: str
    machine: Machine
    sizes: DataSizes
    forget_users: list[str]
    config: BenchConfig
    records: list[MethodRecord]
    aims: list[Aim]
    seconds_total: float

    def record(self, method: str) -> MethodRecord:
        return next(r for r in self.records if r.method == method)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": "unlearning",
            "setting": self.setting,
            "machine": self.machine.to_dict(),
            "sizes": asdict(self.sizes),
            "forget_users": list(self.forget_users),
            "config": self.config.to_dict(),
            "records": [r.to_dict() for r in self.records],
            "aims": [asdict(a) for a in self.aims],
            "seconds_total": self.seconds_total,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> UnlearningResult:
        return cls(
            setting=raw["setting"],
            machine=Machine.from_dict(raw["machine"]),
            sizes=DataSizes(**raw["sizes"]),
            forget_users=list(raw["forget_users"]),
            config=BenchConfig.from_dict(raw["config"]),
            records=[MethodRecord.from_dict(r) for r in raw["records"]],
            aims=[Aim(**a) for a in raw["aims"]],
            seconds_total=raw["seconds_total"],
        )
