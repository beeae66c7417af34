"""Metrics, registered by name so that reports and benchmarks can loop over them.

Probabilities are P(positive label).  Divergences compare two models' Bernoulli predictions sample by
sample and average: ``jensen_shannon`` (base-2 logs, in [0, 1]) and ``symmetric_kl`` (KL(p||q) + KL(q||p),
nats).  The reference code's "JSD" was the symmetric KL; both are reported here under their real names.
Efficiency: ``parameter_count`` and ``ResourceMeter`` (wall seconds and peak memory of a block).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
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


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic on average ranks: the same number as sklearn's
    ``roc_auc_score`` (ties count one half) at a fraction of its per-call cost, for bootstrap loops."""
    positive = np.asarray(labels).astype(bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc_ci(
    labels: np.ndarray, probs: np.ndarray, rounds: int = 500, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the AUC (resampling samples with replacement)."""
    rng = np.random.default_rng(seed)
    labels, probs = np.asarray(labels), np.asarray(probs)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[idx])) == 2:
            values.append(rank_auc(labels[idx], probs[idx]))
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


def sample_loss(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Cross-entropy of each sample's gold label (nats): the membership attack's signal."""
    return np.asarray(-np.log(_clip(gold_probability(labels, probs))))


def membership_inference_auc(
    member_labels: np.ndarray, member_probs: np.ndarray, unseen_labels: np.ndarray, unseen_probs: np.ndarray
) -> float:
    """Loss-based membership attack: AUC of "lower loss means member" between members and unseen samples.

    0.5 means the model treats the two sets alike (nothing to infer); 1.0 means members are obvious.
    """
    member_loss, unseen_loss = (
        sample_loss(member_labels, member_probs),
        sample_loss(unseen_labels, unseen_probs),
    )
    truth = np.concatenate([np.ones(len(member_loss)), np.zeros(len(unseen_loss))])
    return float(roc_auc_score(truth, -np.concatenate([member_loss, unseen_loss])))


def bootstrap_membership_ci(
    member_labels: np.ndarray,
    member_probs: np.ndarray,
    unseen_labels: np.ndarray,
    unseen_probs: np.ndarray,
    rounds: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``membership_inference_auc`` (each group resampled apart)."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a) for a in (member_labels, member_probs, unseen_labels, unseen_probs)]
    if len(arrays[0]) == 0 or len(arrays[2]) == 0:
        return float("nan"), float("nan")
    member_loss, unseen_loss = sample_loss(arrays[0], arrays[1]), sample_loss(arrays[2], arrays[3])
    truth = np.concatenate([np.ones(len(member_loss)), np.zeros(len(unseen_loss))])
    values = []
    for _ in range(rounds):
        m = rng.integers(0, len(member_loss), len(member_loss))
        u = rng.integers(0, len(unseen_loss), len(unseen_loss))
        values.append(rank_auc(truth, -np.concatenate([member_loss[m], unseen_loss[u]])))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------- efficiency


def parameter_count(parameters: Iterable[torch.nn.Parameter]) -> int:
    """Number of scalar parameters in ``parameters`` (e.g. the LoRA tensors a method trains)."""
    return int(sum(p.numel() for p in parameters))


def proc_status_kib(field_name: str) -> int | None:
    """A kB figure of this process's /proc/self/status (``VmRSS``, ``VmHWM``, ...); None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Linux resets the process's peak RSS (VmHWM) to its current RSS when "5" is written to clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return proc_status_kib("VmHWM") is not None


class ResourceMeter:
    """Wall seconds and peak memory of a ``with`` block.

    Memory, by device (``kind`` says which was measured):
    - ``cuda_max_memory_allocated``: ``torch.cuda.max_memory_allocated`` after a reset at entry, i.e. the
      peak bytes held by tensors on the GPU (base model, adapters, activations, optimiser state);
    - ``cpu_peak_rss``: the process's peak resident set size (Linux VmHWM), reset at entry, so it covers
      the block only (base model, adapters, activations, Python objects: everything resident);
    - ``cpu_ru_maxrss``: where the reset is impossible, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the
      peak RSS since the process started (an upper bound for the block).
    ``baseline_bytes`` is the same measure at entry; ``peak_bytes - baseline_bytes`` is what the block added.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.kind = ""
        self.seconds = 0.0
        self.baseline_bytes = 0
        self.peak_bytes = 0
        self._started = 0.0

    def _current(self) -> int:
        if self.kind == "cuda_max_memory_allocated":
            return int(torch.cuda.memory_allocated(self.device))
        rss = proc_status_kib("VmRSS")
        return rss * 1024 if rss is not None else 0

    def __enter__(self) -> ResourceMeter:
        if self.device.type == "cuda":
            self.kind = "cuda_max_memory_allocated"
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.kind = "cpu_peak_rss" if _reset_peak_rss() else "cpu_ru_maxrss"
        self.baseline_bytes = self._current()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "cuda_max_memory_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.kind == "cpu_peak_rss":
            self.peak_bytes = (proc_status_kib("VmHWM") or 0) * 1024
        else:
            self.peak_bytes = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
        self.peak_bytes = max(self.peak_bytes, self.baseline_bytes)  # RSS can shrink below the entry value
        self.seconds = time.perf_counter() - self._started

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "peak_bytes": self.peak_bytes, "baseline_bytes": self.baseline_bytes}
