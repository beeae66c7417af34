"""Evaluation of an adapter on a split, next to two non-LLM references fitted on the training split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.ml import metrics
from core.ml.scoring import Scorer


def item_mean_rating_scores(train: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """Reference 1: the target item's mean training rating (global mean for unseen items)."""
    means = train.groupby("item_id")["rating"].mean()
    return target["item_id"].map(means).fillna(train["rating"].mean()).to_numpy(dtype=np.float64)


def item_popularity_scores(train: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """Reference 2: how many training ratings the target item has."""
    counts = train.groupby("item_id").size()
    return target["item_id"].map(counts).fillna(0).to_numpy(dtype=np.float64)


REFERENCES = {"item_mean_rating": item_mean_rating_scores, "item_popularity": item_popularity_scores}


@dataclass
class Evaluation:
    name: str
    samples: int
    auc: float
    auc_ci95: tuple[float, float]
    logloss: float | None
    accuracy: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "samples": self.samples,
            "auc": self.auc,
            "auc_ci95": list(self.auc_ci95),
            "logloss": self.logloss,
            "accuracy": self.accuracy,
        }


def evaluate_probs(name: str, labels: np.ndarray, probs: np.ndarray, calibrated: bool = True) -> Evaluation:
    """AUC with a bootstrap 95% interval; LogLoss and accuracy only for calibrated probabilities."""
    return Evaluation(
        name=name,
        samples=len(labels),
        auc=metrics.auc(labels, probs),
        auc_ci95=metrics.bootstrap_auc_ci(labels, probs),
        logloss=metrics.logloss(labels, probs) if calibrated else None,
        accuracy=metrics.accuracy(labels, probs) if calibrated else None,
    )


def evaluate_all(
    scorer: Scorer | None, train: pd.DataFrame, target: pd.DataFrame, progress: bool = True
) -> list[Evaluation]:
    """The adapter (if given) and the two references on ``target``; references are scores, not
    probabilities, so only their AUC is reported."""
    labels = target["label"].to_numpy()
    results = []
    if scorer is not None:
        results.append(
            evaluate_probs("adapter", labels, scorer.score(target, progress=progress, desc="evaluating"))
        )
    for name, fn in REFERENCES.items():
        results.append(evaluate_probs(name, labels, fn(train, target), calibrated=False))
    return results
