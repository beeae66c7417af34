"""One run: train the parent, run every method from it on the same forget set, measure each model.

Scale the data (``BenchSizes``), pick the forget users with the seed, train the parent with the v1
recipe on the training split, then run each method (Retrain first: it is the reference) and measure on
data that each model never trained on:

- utility on the test split (forgotten users' samples excluded): AUC with a bootstrap 95% interval,
  LogLoss, accuracy;
- effectiveness on F: Jensen-Shannon divergence and symmetric KL of the predictions from Retrain's;
- a loss-based membership-inference AUC, F against an unseen sample of the same size and label mix
  (valid/test samples of users who were not forgotten, disjoint from the utility subset), with a
  bootstrap 95% interval;
- F's mean gold-label probability before (the parent) and after;
- efficiency: wall seconds, trainable parameters, peak memory, and seconds relative to Retrain.

The parent's own figures are recorded as the "before" reference.  Nothing is selected on test data:
early stopping (parent, Retrain) watches the validation split, and every hyper-parameter is fixed
before the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from benchmarks.report import Machine
from benchmarks.unlearning.config import PARENT, REFERENCE, BenchConfig
from benchmarks.unlearning.data import BenchData, bench_data
from benchmarks.unlearning.records import Aim, ForgetFigures, MethodRecord, Role, UnlearningResult
from core.ml import metrics
from core.ml.data import PreparedData
from core.ml.evaluation import evaluate_probs
from core.ml.model import load_base, new_adapter, unload_adapter
from core.ml.scoring import Scorer
from core.ml.training import TrainConfig, train_adapter
from core.ml.unlearning import Progress, UnlearningInputs, UnlearningReport, run_unlearning
from core.ml.unlearning.adapters import activate, adapter_size
from core.ml.workflows import scorer_for

Log = Callable[[str], None]


@dataclass
class Predictions:
    """P(positive) of one model on the test, forget and unseen samples."""

    test: np.ndarray
    forget: np.ndarray
    unseen: np.ndarray


def predict(scorer: Scorer, adapter: str, frames: BenchData) -> Predictions:
    activate(scorer.loaded.model, adapter, trainable=False)
    return Predictions(scorer.score(frames.test), scorer.score(frames.forget), scorer.score(frames.unseen))


def parent_recipe(config: BenchConfig, train_size: int) -> TrainConfig:
    """The parent's recipe, its step budget turned into ``parent_epochs`` passes over ``train_size``."""
    if config.parent_epochs is None:
        return config.parent
    per_epoch = max(1, math.ceil(train_size / config.parent.batch_size))
    steps = max(1, math.ceil(config.parent_epochs * per_epoch))
    every = max(1, math.ceil(steps / config.parent_evals))
    return replace(config.parent, max_steps=steps, eval_every=every, max_samples=None)


def method_config(name: str, config: BenchConfig, recipe: TrainConfig) -> dict[str, Any]:
    """Retrain gets the parent's recipe; the approximate methods its learning rate and batch size (their
    step budgets come from |F|); then ``config.method_configs`` overrides."""
    base: dict[str, Any] = {"seed": config.seed}
    if name == REFERENCE:
        base["train"] = recipe.to_dict()
    else:
        base.update(learning_rate=recipe.learning_rate, batch_size=recipe.batch_size)
    return {**base, **config.method_configs.get(name, {})}


def train_parent(scorer: Scorer, frames: BenchData, recipe: TrainConfig, progress: bool) -> UnlearningReport:
    """Train the parent adapter on the training split; its cost is reported like a method's."""
    with metrics.ResourceMeter(scorer.loaded.device) as meter:
        trained = train_adapter(scorer, PARENT, frames.train, frames.valid, recipe, progress=progress)
    activate(scorer.loaded.model, PARENT, trainable=False)
    return UnlearningReport(
        method=PARENT,
        config=recipe.to_dict(),
        seconds=meter.seconds,
        steps=trained.steps,
        trainable_parameters=adapter_size(scorer.loaded.model, PARENT),
        peak_memory_bytes=meter.peak_bytes,
        details={
            "best_valid_auc": trained.best_valid_auc,
            "curve": trained.curve,
            "memory": meter.describe(),
        },
    )


def run_benchmark(
    data: PreparedData, config: BenchConfig, log: Log | None = None, progress: bool = False
) -> UnlearningResult:
    """Run the whole benchmark: one record per method, the parent first as the "before" reference, and
    issue 3's aims checked against the records.  ``log`` receives one line per step."""
    say = log or (lambda _message: None)
    started = time.perf_counter()
    frames = bench_data(data, config)
    recipe = parent_recipe(config, len(frames.train))
    say(f"data: {asdict(frames.sizes())} (setting {config.setting}); forget users {frames.forget_users}")

    loaded = load_base(config.model)
    scorer = scorer_for(loaded, data)
    new_adapter(loaded, recipe.lora, PARENT, seed=config.seed)
    say(
        f"training the parent: {recipe.max_steps} steps of {recipe.batch_size} on {len(frames.train)} samples"
    )
    runs = {PARENT: train_parent(scorer, frames, recipe, progress)}
    predictions = {PARENT: predict(scorer, PARENT, frames)}
    best = runs[PARENT].details["best_valid_auc"]
    say(f"parent: {runs[PARENT].steps} steps in {runs[PARENT].seconds:.0f} s, best valid AUC {best:.4f}")

    run_methods(scorer, frames, config, recipe, runs, predictions, say, progress)

    records = [record_for(name, runs, predictions, frames, config) for name in runs]
    return UnlearningResult(
        setting=config.setting,
        machine=Machine.here(loaded.device),
        sizes=frames.sizes(),
        forget_users=frames.forget_users,
        config=config,
        records=records,
        aims=check_aims(records),
        seconds_total=time.perf_counter() - started,
    )


def run_methods(
    scorer: Scorer,
    frames: BenchData,
    config: BenchConfig,
    recipe: TrainConfig,
    runs: dict[str, UnlearningReport],
    predictions: dict[str, Predictions],
    say: Log,
    progress: bool = False,
    variants: dict[str, tuple[str, dict[str, Any]]] | None = None,
) -> None:
    """Run every method of ``config`` (Retrain first: the reference), then each variant (label: (method,
    config overrides), e.g. E2URec with another teacher space), from the trained ``PARENT`` adapter on
    ``frames``' forget set; adds each one's report and predictions under its name or label."""
    loaded = scorer.loaded
    inputs = UnlearningInputs(scorer, PARENT, frames.forget, frames.retain, frames.valid)
    ordered = sorted(config.methods, key=lambda m: m != REFERENCE)  # the reference first
    plan: list[tuple[str, str, dict[str, Any]]] = [(name, name, {}) for name in ordered] + [
        (k, m, o) for k, (m, o) in (variants or {}).items()
    ]
    for label, name, overrides in plan:
        say(f"running {label}")
        settings = {**method_config(name, config, recipe), **overrides}
        runs[label] = run_unlearning(name, inputs, settings, label, Progress(bar=progress))
        predictions[label] = predict(scorer, label, frames)
        activate(loaded.model, PARENT, trainable=False)  # never delete the active adapter
        unload_adapter(loaded, label)
        say(f"{label}: {runs[label].steps} steps in {runs[label].seconds:.1f} s")


def record_for(
    name: str,
    runs: dict[str, UnlearningReport],
    predictions: dict[str, Predictions],
    frames: BenchData,
    config: BenchConfig,
) -> MethodRecord:
    """Model ``name``'s figures (see the module docstring), from every model's run and predictions (the
    parent's and Retrain's are its references)."""
    rounds, seed = config.bootstrap_rounds, config.seed
    run, reference_seconds = runs[name], runs[REFERENCE].seconds
    own, before, reference = predictions[name], predictions[PARENT], predictions[REFERENCE]
    forget_labels, unseen_labels = frames.forget["label"].to_numpy(), frames.unseen["label"].to_numpy()
    n = len(frames.unseen)  # equal-size membership inference: the first n forget rows in a seeded order
    members = np.random.default_rng(seed).permutation(len(frames.forget))[:n]
    attack = (forget_labels[members], own.forget[members], unseen_labels, own.unseen)
    forget = ForgetFigures(
        samples=len(frames.forget),
        gold_prob_before=float(np.mean(metrics.gold_probability(forget_labels, before.forget))),
        gold_prob_after=float(np.mean(metrics.gold_probability(forget_labels, own.forget))),
        unseen_gold_prob=float(np.mean(metrics.gold_probability(unseen_labels, own.unseen))),
        mia_samples_each=n,
        mia_auc=metrics.membership_inference_auc(*attack),
        mia_auc_ci95=metrics.bootstrap_membership_ci(*attack, rounds=rounds, seed=seed),
        to_retrain={d: fn(own.forget, reference.forget) for d, fn in metrics.DIVERGENCES.items()},
    )
    role = Role.BEFORE if name == PARENT else Role.EXACT if name == REFERENCE else Role.APPROXIMATE
    return MethodRecord(
        method=name,
        role=role,
        config=run.config,
        seconds=run.seconds,
        steps=run.steps,
        trainable_parameters=run.trainable_parameters,
        peak_memory_bytes=run.peak_memory_bytes,
        details=run.details,
        test=evaluate_probs(name, frames.test["label"].to_numpy(), own.test),
        forget=forget,
        seconds_vs_retrain=run.seconds / reference_seconds if reference_seconds > 0 else None,
    )


def check_aims(records: Sequence[MethodRecord]) -> list[Aim]:
    """Issue 3's aims for E2URec, each judged with its margin.  Empty when E2URec was not run."""
    by_name = {r.method: r for r in records}
    if "e2urec" not in by_name or REFERENCE not in by_name:
        return []
    e2u, ref, parent = by_name["e2urec"], by_name[REFERENCE], by_name[PARENT]
    ratio = e2u.seconds / ref.seconds
    gap = abs(e2u.test.auc - ref.test.auc)
    jsd = e2u.forget.to_retrain["jensen_shannon"]
    others = {
        r.method: r.forget.to_retrain["jensen_shannon"]
        for r in records
        if r.role in (Role.APPROXIMATE, Role.BEFORE) and r.method != "e2urec"
    }
    best_other = min(others.values()) if others else math.inf
    closest = min(others, key=others.__getitem__) if others else "-"
    mia, parent_mia = e2u.forget.mia_auc, parent.forget.mia_auc
    return [
        _aim("wall time <= 20% of Retrain's", ratio, "<= 0.20", 0.20 - ratio),
        _aim("test AUC within 0.01 of Retrain's", gap, "|dAUC| <= 0.01", 0.01 - gap),
        _aim(
            "JSD to Retrain on F below every other approximate method's and the parent's",
            jsd,
            f"< {best_other:.6g} ({closest})",
            best_other - jsd,
        ),
        _aim(
            "MIA AUC closer to 0.5 than the parent's",
            mia,
            f"|x - 0.5| < {abs(parent_mia - 0.5):.4f} (parent {parent_mia:.4f})",
            abs(parent_mia - 0.5) - abs(mia - 0.5),
        ),
    ]


def _aim(aim: str, value: float, target: str, margin: float) -> Aim:
    met = bool(margin > 0 or (margin == 0 and "<=" in target))
    return Aim(aim=aim, value=value, target=target, met=met, margin=margin)
