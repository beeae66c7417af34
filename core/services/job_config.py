"""The configuration of one unlearning job: everything needed to reproduce it, fixed when its batch forms
and stored on its row: ``unlearning_jobs.config`` holds the JSON of ``JobConfig.to_dict`` and
``unlearning_jobs.thresholds`` the verifier's ``EvidenceConfig`` (``stored_evidence_config`` reads it,
old point-gate thresholds included)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from core.ml.evidence import EvidenceConfig
from core.ml.unlearning_job import UnlearningPlan
from core.ml.verification import VerificationSizes

# the point gates' thresholds stored by jobs made before the verifier used evidence: only utility_margin
# kept a meaning (the AUC the child may lose, now judged on its interval's lower bound)
RETIRED_THRESHOLDS = ("mia_margin", "gold_margin")


@dataclass(frozen=True)
class JobConfig:
    """A job's frozen recipe; ``to_dict``/``from_dict`` round-trip the stored JSON."""

    method: str  # the unlearning method, by registered name
    method_config: dict[str, Any] = field(default_factory=dict)  # its JSON config
    valid_samples: int = 256  # the fixed validation subset of the utility check
    max_verify_samples: int = 512  # cap on the forget samples the verifier scores
    reference_users: int = 40  # held-out users that calibrate the memorisation test ...
    reference_samples: int = 20  # ... with at most this many samples each
    max_retries: int = 3  # failed attempts a request survives before it fails (or falls back)
    # jobs a request may go through, whatever ended them (failed gates, promotion conflicts, give-ups):
    # past it, a request is no longer re-queued but fails (or falls back).  Jobs stored before it existed
    # read the default.
    max_attempts: int = 8
    seed: int = 0  # the verification samples' draws
    exact_fallback: bool = False  # retrain from the base once a batch uses up its retries ...
    fallback_method_config: dict[str, Any] = field(default_factory=dict)  # ... with this config
    fallback: bool = False  # this job is such a retrain (it never falls back again) ...
    fallback_of_job: int | None = None  # ... for the batch of this job

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method must be a method name, got {self.method!r}")
        for name in ("method_config", "fallback_method_config"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a JSON object")
        for name in (
            "valid_samples",
            "max_verify_samples",
            "reference_users",
            "reference_samples",
            "max_retries",
            "max_attempts",
            "seed",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.fallback != (self.fallback_of_job is not None):
            raise ValueError("a fallback job names the job it falls back from, and only a fallback job does")

    @property
    def falls_back(self) -> bool:
        """Whether requests that use up their retries go to an exact-fallback job (never from a fallback)."""
        return self.exact_fallback and not self.fallback

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON; the fallback members only on a fallback job."""
        values = asdict(self)
        if not self.fallback:
            del values["fallback"], values["fallback_of_job"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> JobConfig:
        """The inverse of ``to_dict``; ValueError for unknown members or values out of range."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown job configuration members {unknown}")
        return cls(**values)

    def verification_sizes(self) -> VerificationSizes:
        return VerificationSizes(
            self.valid_samples,
            self.max_verify_samples,
            self.reference_users,
            self.reference_samples,
            self.seed,
        )

    def unlearning_plan(self, evidence: EvidenceConfig) -> UnlearningPlan:
        """What the ML part of the job needs, with the job's verifier statistics."""
        return UnlearningPlan(self.method, self.method_config, evidence, self.verification_sizes())


def stored_evidence_config(values: Mapping[str, Any]) -> EvidenceConfig:
    """The ``EvidenceConfig`` stored on a job row (``EvidenceConfig.to_dict``); the point gates' thresholds
    of older jobs read as the default statistics with their ``utility_margin`` (the retired margins are
    dropped).  ValueError for unknown members or values out of range."""
    if any(name in values for name in RETIRED_THRESHOLDS):
        values = {k: v for k, v in values.items() if k not in RETIRED_THRESHOLDS}
    return EvidenceConfig.from_dict(dict(values))
