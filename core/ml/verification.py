"""Verification gates for an unlearned candidate, on data it never trained on (no retrained model exists
in production):

- utility: AUC on a fixed held-out validation subset not more than ``utility_margin`` below the parent's;
- forgetting: the loss-based membership-inference AUC between F and an equal-size unseen sample within
  ``mia_margin`` of 0.5, and F's mean gold-label probability at most ``gold_margin`` above the unseen one's;
- recorded, not gated: LogLoss/accuracy, the parent's figures, the child's divergence from the parent on
  F and, when the method reports it, the divergence to its forgetting teacher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.ml import metrics
from core.ml.scoring import Scorer


@dataclass(frozen=True)
class Thresholds:
    """The gates' margins; stored with each job (``to_dict``) so that its verdict can be reproduced."""

    utility_margin: float = 0.02  # child valid AUC >= parent valid AUC - margin
    mia_margin: float = 0.1  # |MIA AUC(F vs unseen) - 0.5| <= margin
    gold_margin: float = 0.05  # mean P(gold | F) - mean P(gold | unseen) <= margin

    def __post_init__(self) -> None:
        for name, value in self.to_dict().items():
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"threshold {name} must be a number, got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Thresholds:
        """The inverse of ``to_dict``; ValueError for unknown names or values that are not numbers."""
        unknown = sorted(set(values) - set(asdict(cls())))
        if unknown:
            raise ValueError(f"unknown thresholds {unknown}")
        return cls(**values)


@dataclass
class VerificationResult:
    passed: bool
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    reasons: list[str] = field(default_factory=list)  # why it failed (empty when passed)


def _scores(scorer: Scorer, adapter: str, frame: pd.DataFrame) -> np.ndarray:
    scorer.loaded.model.set_adapter(adapter)
    return scorer.score(frame) if len(frame) else np.zeros(0)


def equal_size(
    forget: pd.DataFrame, unseen: pd.DataFrame, cap: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Samples of F and of the unseen pool of the same size (at most ``cap``), drawn with ``seed``."""
    n = min(len(forget), len(unseen), cap)
    return (
        forget.sample(n=n, random_state=seed).reset_index(drop=True),
        unseen.sample(n=n, random_state=seed).reset_index(drop=True),
    )


def verify_candidate(
    scorer: Scorer,
    parent_name: str,
    child_name: str,
    forget: pd.DataFrame,
    unseen: pd.DataFrame,
    valid: pd.DataFrame,
    thresholds: Thresholds,
    teacher_divergence: dict[str, float] | None = None,
) -> VerificationResult:
    """Score parent and child (both loaded in ``scorer``'s model) and apply the gates.

    ``forget``/``unseen`` should already be of equal size (``equal_size``); ``valid`` is the fixed utility
    subset.  Leaves ``child_name`` as the active adapter.
    """
    labels_v = valid["label"].to_numpy()
    parent_v, child_v = _scores(scorer, parent_name, valid), _scores(scorer, child_name, valid)
    parent_f, parent_u = _scores(scorer, parent_name, forget), _scores(scorer, parent_name, unseen)
    child_f, child_u = _scores(scorer, child_name, forget), _scores(scorer, child_name, unseen)
    labels_f, labels_u = forget["label"].to_numpy(), unseen["label"].to_numpy()
    figures: dict[str, Any] = {
        "samples": {"valid": len(valid), "forget": len(forget), "unseen": len(unseen)},
        "parent_valid": metrics.utility(labels_v, parent_v),
        "child_valid": metrics.utility(labels_v, child_v),
    }
    reasons = []
    parent_auc, child_auc = figures["parent_valid"]["auc"], figures["child_valid"]["auc"]
    if math.isnan(parent_auc) or math.isnan(child_auc):
        reasons.append("utility: validation AUC undefined (one class only in the validation subset)")
    elif child_auc < parent_auc - thresholds.utility_margin:
        reasons.append(
            f"utility: valid AUC {child_auc:.4f} < parent {parent_auc:.4f} - {thresholds.utility_margin}"
        )
    if len(forget) and len(unseen):
        for who, f_probs, u_probs in (("parent", parent_f, parent_u), ("child", child_f, child_u)):
            gold_f = float(np.mean(metrics.gold_probability(labels_f, f_probs)))
            gold_u = float(np.mean(metrics.gold_probability(labels_u, u_probs)))
            figures[f"{who}_forget"] = {
                "mia_auc": metrics.membership_inference_auc(labels_f, f_probs, labels_u, u_probs),
                "gold_probability_forget": gold_f,
                "gold_probability_unseen": gold_u,
                "gold_gap": gold_f - gold_u,
            }
        child = figures["child_forget"]
        if abs(child["mia_auc"] - 0.5) > thresholds.mia_margin:
            reasons.append(
                f"forgetting: MIA AUC {child['mia_auc']:.4f} not within {thresholds.mia_margin} of 0.5"
            )
        if child["gold_gap"] > thresholds.gold_margin:
            reasons.append(f"forgetting: gold-label gap {child['gold_gap']:.4f} > {thresholds.gold_margin}")
        figures["divergence_child_parent_forget"] = {
            name: fn(child_f, parent_f) for name, fn in metrics.DIVERGENCES.items()
        }
    else:
        reasons.append("forgetting: no unseen data to compare the forget set with")
    if teacher_divergence:
        figures["divergence_to_forgetting_teacher"] = teacher_divergence
    scorer.loaded.model.set_adapter(child_name)
    return VerificationResult(not reasons, figures, thresholds.to_dict(), reasons)
