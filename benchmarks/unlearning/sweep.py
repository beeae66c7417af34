"""Several forget sets from one trained parent: forget-set sizes x seeds, every method and variant on each,
then the figures over many forget users rather than one.

A *unit* is one forget set (a size, a seed): Retrain and every method run on it from the same parent, and
each model gets the benchmark's record (``run.record_for``).  Across units:

- per forget user, each model's Jensen-Shannon divergence to Retrain on that user's samples and the change
  of the user's mean gold-label probability from the parent's;
- per size, the distribution of those figures over all forget users of all its seeds (mean with a
  bootstrap 95% interval, n), and paired differences E2URec minus each other model, user by user;
- cost: E2URec's wall time (augmented model included) over Retrain's, per unit and per size, and what the
  retain ratio (``retain_ratios`` variants of E2URec) does to cost and to the divergence.

Units run in order of seed, then size (every size once before any size twice), and a unit whose
estimated cost would pass ``deadline`` is skipped and listed as such, so that a time-boxed run (the GPU
proof) always ends with what it could measure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.unlearning.config import PARENT, REFERENCE, BenchConfig, BenchmarkError
from benchmarks.unlearning.data import DataSizes, frames_for
from benchmarks.unlearning.records import MethodRecord
from benchmarks.unlearning.run import Predictions, predict, record_for, run_methods
from core.ml import metrics
from core.ml.data import PreparedData
from core.ml.scoring import Scorer
from core.ml.training import TrainConfig
from core.ml.unlearning import UnlearningReport

Log = Callable[[str], None]
E2UREC = "e2urec"
LOG_PROB_TEACHER = "e2urec_logprob"  # E2URec with its teacher in log-probability space


@dataclass(frozen=True)
class ForgetSize:
    """A forget-set size: ``users`` users, or ``fraction`` of the users (at least one)."""

    label: str
    users: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str) -> ForgetSize:
        """``"10"`` (users) or ``"20%"`` (a fraction of the users)."""
        text = text.strip()
        try:
            if text.endswith("%"):
                return cls(text, fraction=float(text[:-1]) / 100)
            return cls(text, users=int(text))
        except ValueError:
            raise BenchmarkError(f"forget size {text!r}: give a number of users or a percentage") from None

    def config(self, base: BenchConfig, seed: int) -> BenchConfig:
        if self.fraction is not None:
            return replace(base, forget_users=None, forget_fraction=self.fraction, seed=seed)
        return replace(base, forget_users=self.users, seed=seed)


def variants_for(
    retain_ratios: Sequence[float], teacher_spaces: bool
) -> dict[str, tuple[str, dict[str, Any]]]:
    """E2URec's variants: each extra retain ratio (``e2urec_rr4``: |R| = 4 |F|), and the log-probability
    teacher (the default E2URec is the paper's raw-logit teacher)."""
    variants: dict[str, tuple[str, dict[str, Any]]] = {
        f"e2urec_rr{ratio:g}".replace(".", "p"): (E2UREC, {"retain_ratio": ratio})
        for ratio in retain_ratios
        if ratio != 1.0
    }
    if teacher_spaces:
        variants[LOG_PROB_TEACHER] = (E2UREC, {"teacher_space": "log_probs"})
    return variants


@dataclass(frozen=True)
class UserFigures:
    """One forget user's figures under one model: samples, JS divergence to Retrain, gold-P change."""

    user: str
    samples: int
    jsd_to_retrain: float
    gold_change: float


@dataclass(frozen=True)
class Unit:
    """One forget set (size ``size``, ``seed``): every model's record and per-user figures."""

    size: str
    seed: int
    forget_users: list[str]
    sizes: DataSizes
    records: list[MethodRecord]
    per_user: dict[str, list[UserFigures]]
    seconds: float

    def seconds_of(self, method: str) -> float:
        return next(r.seconds for r in self.records if r.method == method)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "seed": self.seed,
            "forget_users": self.forget_users,
            "sizes": asdict(self.sizes),
            "records": [r.to_dict() for r in self.records],
            "per_user": {m: [asdict(u) for u in figures] for m, figures in self.per_user.items()},
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` values with a bootstrap 95% interval (NaN where n < 2)."""

    mean: float
    ci95: tuple[float, float]
    n: int


def mean_ci(values: Sequence[float], rounds: int = 1000, seed: int = 0) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap 95% interval."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return Estimate(math.nan, (math.nan, math.nan), 0)
    if len(data) < 2:
        return Estimate(float(data.mean()), (math.nan, math.nan), 1)
    draws = np.random.default_rng(seed).integers(0, len(data), size=(rounds, len(data)))
    means = data[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(data.mean()), (float(low), float(high)), len(data))


@dataclass
class SweepResult:
    units: list[Unit] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, methods: Sequence[str], rounds: int) -> dict[str, Any]:
        return {
            "units": [u.to_dict() for u in self.units],
            "skipped": self.skipped,
            "by_size": summarise(self.units, methods, rounds),
        }


def per_user_figures(
    predictions: dict[str, Predictions], forget: pd.DataFrame, models: Sequence[str]
) -> dict[str, list[UserFigures]]:
    """Each model's figures per forget user (``forget``'s rows in the order the predictions are in)."""
    labels = forget["label"].to_numpy()
    users = forget["user_id"].astype(str).to_numpy()
    reference, before = predictions[REFERENCE].forget, predictions[PARENT].forget
    gold_before = metrics.gold_probability(labels, before)
    figures: dict[str, list[UserFigures]] = {}
    for model in models:
        own = predictions[model].forget
        gold_after = metrics.gold_probability(labels, own)
        figures[model] = [
            UserFigures(
                user=user,
                samples=int(mask.sum()),
                jsd_to_retrain=metrics.jensen_shannon(own[mask], reference[mask]),
                gold_change=float(np.mean(gold_after[mask] - gold_before[mask])),
            )
            for user in sorted(set(users))
            for mask in [users == user]
        ]
    return figures


def run_unit(
    scorer: Scorer,
    data: PreparedData,
    train: pd.DataFrame,
    config: BenchConfig,
    size: ForgetSize,
    seed: int,
    recipe: TrainConfig,
    parent_run: UnlearningReport,
    variants: dict[str, tuple[str, dict[str, Any]]],
    say: Log,
) -> Unit:
    """One forget set from the trained ``PARENT``: every method and variant, records, per-user figures."""
    started = time.perf_counter()
    unit_config = size.config(config, seed)
    frames = frames_for(train, data, unit_config)
    say(
        f"forget set {size.label} seed {seed}: {len(frames.forget_users)} users, {len(frames.forget)} samples"
    )
    runs = {PARENT: parent_run}
    predictions = {PARENT: predict(scorer, PARENT, frames)}
    run_methods(scorer, frames, unit_config, recipe, runs, predictions, say, variants=variants)
    records = [record_for(name, runs, predictions, frames, unit_config) for name in runs]
    return Unit(
        size=size.label,
        seed=seed,
        forget_users=frames.forget_users,
        sizes=frames.sizes(),
        records=records,
        per_user=per_user_figures(predictions, frames.forget, list(runs)),
        seconds=time.perf_counter() - started,
    )


def run_sweep(
    scorer: Scorer,
    data: PreparedData,
    train: pd.DataFrame,
    config: BenchConfig,
    sizes: Sequence[ForgetSize],
    seeds: int,
    recipe: TrainConfig,
    parent_run: UnlearningReport,
    variants: dict[str, tuple[str, dict[str, Any]]],
    say: Log,
    deadline: float | None = None,
    on_unit: Callable[[SweepResult], None] | None = None,
) -> SweepResult:
    """Every (seed, size) unit in order, skipping those whose estimated cost would pass ``deadline`` (a
    ``time.perf_counter`` value).  A unit's estimate: the last one of its size, else the parent's training
    time (Retrain alone costs about that) plus the last unit's non-Retrain seconds.  ``on_unit`` sees the
    result so far after each unit (to save it: a run killed at its time limit still leaves figures)."""
    result = SweepResult()
    last: dict[str, float] = {}
    extra = 0.0
    for seed_offset in range(seeds):
        for size in sizes:
            seed = config.seed + seed_offset
            estimate = last.get(size.label, parent_run.seconds + extra)
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and estimate > left:
                say(
                    f"skipping forget set {size.label} seed {seed}: ~{estimate:.0f} s needed, "
                    f"{left:.0f} s left"
                )
                result.skipped.append(
                    {"size": size.label, "seed": seed, "estimated_seconds": estimate, "seconds_left": left}
                )
                continue
            try:
                unit = run_unit(scorer, data, train, config, size, seed, recipe, parent_run, variants, say)
            except BenchmarkError as error:  # e.g. more forget users than the scaled data holds
                say(f"skipping forget set {size.label} seed {seed}: {error}")
                result.skipped.append({"size": size.label, "seed": seed, "reason": str(error)})
                continue
            result.units.append(unit)
            if on_unit is not None:
                on_unit(result)
            last[size.label] = unit.seconds
            extra = unit.seconds - unit.seconds_of(REFERENCE)
    return result


def summarise(units: Sequence[Unit], methods: Sequence[str], rounds: int) -> dict[str, Any]:
    """Per size (and "all"): each model's per-user figures as estimates, E2URec minus each other model
    paired user by user, and the cost of E2URec (and its variants) over Retrain's, unit by unit."""
    groups: dict[str, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.size, []).append(unit)
    groups["all"] = list(units)
    summary: dict[str, Any] = {}
    for label, group in groups.items():
        if not group:
            continue
        models = [m for m in group[0].per_user if m in methods or m == PARENT or m.startswith(E2UREC)]
        figures = {m: [f for u in group for f in u.per_user[m]] for m in models}
        distributions = {
            m: {
                "jsd_to_retrain": asdict(mean_ci([f.jsd_to_retrain for f in figures[m]], rounds)),
                "gold_change": asdict(mean_ci([f.gold_change for f in figures[m]], rounds)),
            }
            for m in models
        }
        paired = {}
        if E2UREC in figures:
            for other in models:
                if other in (E2UREC, REFERENCE):
                    continue
                differences = [
                    mine.jsd_to_retrain - theirs.jsd_to_retrain
                    for mine, theirs in zip(figures[E2UREC], figures[other], strict=True)
                ]
                paired[other] = asdict(mean_ci(differences, rounds))
        cost = {
            m: asdict(mean_ci([u.seconds_of(m) / u.seconds_of(REFERENCE) for u in group], rounds))
            for m in models
            if m.startswith(E2UREC)
        }
        augment: dict[str, list[bool]] = {}  # did A over-fit F by the stated gap before defining the teacher?
        for unit in group:
            for record in unit.records:
                if "augment" in record.details:
                    augment.setdefault(record.method, []).append(bool(record.details["augment"]["reached"]))
        summary[label] = {
            "units": len(group),
            "forget_users": sum(len(u.forget_users) for u in group),
            "forget_samples": sum(u.sizes.forget for u in group),
            "retrain_seconds": asdict(mean_ci([u.seconds_of(REFERENCE) for u in group], rounds)),
            "e2urec_seconds": asdict(mean_ci([u.seconds_of(E2UREC) for u in group], rounds))
            if E2UREC in models
            else None,
            "seconds_vs_retrain": cost,
            "augment_reached": {m: f"{sum(flags)} of {len(flags)} runs" for m, flags in augment.items()},
            "per_user": distributions,
            "e2urec_minus_other_jsd_to_retrain": paired,
        }
    return summary
