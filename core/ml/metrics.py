"""Metrics, registered by name so that reports and benchmarks can loop over them.

Probabilities are P(positive label).  Divergences compare two models' Bernoulli predictions sample by
sample and average: ``jensen_shannon`` (base-2 logs, in [0, 1]) and ``symmetric_kl`` (KL(p||q) + KL(q||p),
nats).  The reference code's "JSD" was the symmetric KL; both are reported here under their real names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

EPS = 1e-7

UtilityMetric = Callable[[np.ndarray, np.ndarray], float]
UTILITY_METRICS: dict[str, UtilityMetric] = {}
DIVERGENCES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}


def utility_metric(name: str) -> Callable[[UtilityMetric], UtilityMetric]:
    def register(fn: UtilityMetric) -> UtilityMetric:
        if name in UTILITY_METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        UTILITY_METRICS[name] = fn
        return fn

    return register


def divergence(name: str) -> Callable[[Callable[[np.ndarray, np.ndarray], float]], Any]:
    def register(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
        DIVERGENCES[name] = fn
        return fn

    return register


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)


@utility_metric("auc")
def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, probs))


@utility_metric("logloss")
def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = _clip(probs)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@utility_metric("accuracy")
def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean((np.asarray(probs) > 0.5) == np.asarray(labels).astype(bool)))


def utility(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Every registered utility metric."""
    return {name: fn(labels, probs) for name, fn in UTILITY_METRICS.items()}


def bootstrap_auc_ci(labels: np.ndarray, probs: np.ndarray, rounds: int = 500, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the AUC (resampling samples with replacement)."""
    rng = np.random.default_rng(seed)
    labels, probs = np.asarray(labels), np.asarray(probs)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[idx])) == 2:
            values.append(roc_auc_score(labels[idx], probs[idx]))
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _bernoulli_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p, q = _clip(p), _clip(q)
    return np.asarray(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))


@divergence("jensen_shannon")
def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Mean Jensen-Shannon divergence (bits) between per-sample Bernoulli predictions."""
    m = (_clip(p) + _clip(q)) / 2
    return float(np.mean((_bernoulli_kl(p, m) + _bernoulli_kl(q, m)) / 2) / np.log(2))


@divergence("symmetric_kl")
def symmetric_kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean KL(p||q) + KL(q||p) (nats) between per-sample Bernoulli predictions."""
    return float(np.mean(_bernoulli_kl(p, q) + _bernoulli_kl(q, p)))


def gold_probability(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Probability the model gives to the true label of each sample."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    return np.where(y, p, 1 - p)


def membership_inference_auc(
    member_labels: np.ndarray, member_probs: np.ndarray, unseen_labels: np.ndarray, unseen_probs: np.ndarray
) -> float:
    """Loss-based membership attack: AUC of "lower loss means member" between members and unseen samples.

    0.5 means the model treats the two sets alike (nothing to infer); 1.0 means members are obvious.
    """
    member_loss = -np.log(_clip(gold_probability(member_labels, member_probs)))
    unseen_loss = -np.log(_clip(gold_probability(unseen_labels, unseen_probs)))
    truth = np.concatenate([np.ones(len(member_loss)), np.zeros(len(unseen_loss))])
    return float(roc_auc_score(truth, -np.concatenate([member_loss, unseen_loss])))
