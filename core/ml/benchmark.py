"""The unlearning benchmark: one parent, every registered method on the same forget set, one table.

One run: scale the data (``BenchSizes``; the quick setting keeps a few users so that a 2-core CPU can
run it), pick the forget users with the seed, train the parent with the v1 recipe on the training
split, then run each method (Retrain first: it is the reference) and measure on data that each model
never trained on:

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
before the run.  Pure core: no CLI, no settings; ``app/bench_cli.py`` is the edge.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.ml import metrics
from core.ml.data import PreparedData, select_forget
from core.ml.evaluation import evaluate_probs
from core.ml.model import LoraSpec, ModelConfig, load_base, new_adapter, unload_adapter
from core.ml.training import TrainConfig, train_adapter
from core.ml.unlearning import METHODS, Progress, UnlearningInputs, run_unlearning
from core.ml.unlearning.adapters import activate, adapter_size
from core.ml.workflows import scorer_for

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
        return asdict(self)


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


# ---------------------------------------------------------------------------------------------- data


@dataclass
class BenchData:
    """Every frame one run needs; ``forget`` and ``retain`` partition ``train``."""

    train: pd.DataFrame
    forget: pd.DataFrame
    retain: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    unseen: pd.DataFrame
    forget_users: list[str]

    def sizes(self) -> dict[str, int]:
        return {
            "users": int(self.train["user_id"].nunique()),
            "forget_users": len(self.forget_users),
            "train": len(self.train),
            "forget": len(self.forget),
            "retain": len(self.retain),
            "valid": len(self.valid),
            "test": len(self.test),
            "unseen": len(self.unseen),
        }


def scale_train(train: pd.DataFrame, sizes: BenchSizes, seed: int) -> pd.DataFrame:
    """Keep ``sizes.users`` random users and each one's ``sizes.train_per_user`` most recent samples."""
    if sizes.users is not None:
        users = sorted(train["user_id"].unique())
        if sizes.users < len(users):
            keep = np.random.default_rng(seed).choice(users, size=sizes.users, replace=False)
            train = train[train["user_id"].isin(set(keep))]
    if sizes.train_per_user is not None:
        ordered = train.sort_values(["timestamp", "item_id"], kind="stable")
        train = ordered.groupby("user_id", sort=False).tail(sizes.train_per_user)
    return train.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def choose_forget_users(train: pd.DataFrame, config: BenchConfig) -> list[str]:
    """``forget_users`` users (or ``forget_fraction`` of them, at least one), drawn with the seed."""
    users = sorted(train["user_id"].unique())
    wanted = config.forget_users or max(1, round(config.forget_fraction * len(users)))
    if wanted >= len(users):
        raise BenchmarkError(f"cannot forget {wanted} of {len(users)} users: nothing would be retained")
    rng = np.random.default_rng(config.seed + 1)  # not the stream that picked the users
    return sorted(str(u) for u in rng.choice(users, size=wanted, replace=False))


def label_matched_sample(pool: pd.DataFrame, like: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows of ``pool`` with as many of each label as ``like`` has (fewer where the pool runs short).

    The membership attack reads per-sample loss, and a model's loss depends on the label mix (a model
    leaning "Yes" has low loss on positives); matching the mix keeps that bias out of the attack's AUC."""
    parts = [
        pool[pool["label"] == label].sample(
            n=min(count, int((pool["label"] == label).sum())), random_state=seed
        )
        for label, count in sorted(like["label"].value_counts().items())
    ]
    return pd.concat(parts)


def bench_data(data: PreparedData, config: BenchConfig) -> BenchData:
    """Scale the splits, pick the forget users, and draw the disjoint test and unseen samples."""
    train = scale_train(data.split("train"), config.sizes, config.seed)
    forget_users = choose_forget_users(train, config)
    forget, retain = select_forget(train, users=forget_users)
    valid, test_all = (data.split(s) for s in ("valid", "test"))
    valid_outside = valid[~valid["user_id"].isin(forget_users)]
    test_outside = test_all[~test_all["user_id"].isin(forget_users)]
    test = test_outside
    if config.sizes.test_samples is not None and config.sizes.test_samples < len(test):
        test = test.sample(n=config.sizes.test_samples, random_state=config.seed)
    pool = pd.concat([valid_outside, test_outside.drop(index=test.index)])
    if pool.empty:
        raise BenchmarkError("no valid/test samples outside the forget set to serve as unseen data")
    unseen = label_matched_sample(pool, forget, config.seed)
    return BenchData(
        train=train,
        forget=forget,
        retain=retain,
        valid=valid,
        test=test.reset_index(drop=True),
        unseen=unseen.reset_index(drop=True),
        forget_users=forget_users,
    )


# ---------------------------------------------------------------------------------------------- run


@dataclass
class Predictions:
    """P(positive) of one model on the test, forget and unseen samples."""

    test: np.ndarray
    forget: np.ndarray
    unseen: np.ndarray


def predict(scorer: Any, adapter: str, frames: BenchData) -> Predictions:
    activate(scorer.loaded.model, adapter, trainable=False)
    return Predictions(scorer.score(frames.test), scorer.score(frames.forget), scorer.score(frames.unseen))


def parent_recipe(config: BenchConfig, train_size: int) -> TrainConfig:
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


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


Log = Callable[[str], None]


def run_benchmark(
    data: PreparedData, config: BenchConfig, log: Log | None = None, progress: bool = False
) -> dict[str, Any]:
    """Run the whole benchmark; returns the JSON-ready result (``records``: one per method, the parent
    first as the "before" reference; ``aims``: issue 3's aims checked against the records)."""
    say = log or (lambda _message: None)
    started = time.perf_counter()
    frames = bench_data(data, config)
    recipe = parent_recipe(config, len(frames.train))
    say(f"data: {frames.sizes()} (setting {config.setting}); forget users {frames.forget_users}")

    loaded = load_base(config.model)
    scorer = scorer_for(loaded, data)
    new_adapter(loaded, recipe.lora, PARENT, seed=config.seed)
    say(
        f"training the parent: {recipe.max_steps} steps of {recipe.batch_size} on {len(frames.train)} samples"
    )
    with metrics.ResourceMeter(loaded.device) as meter:
        trained = train_adapter(scorer, PARENT, frames.train, frames.valid, recipe, progress=progress)
    activate(loaded.model, PARENT, trainable=False)
    before = predict(scorer, PARENT, frames)
    parent_run = {
        "seconds": meter.seconds,
        "steps": trained.steps,
        "trainable_parameters": adapter_size(loaded.model, PARENT),
        "peak_memory_bytes": meter.peak_bytes,
        "config": recipe.to_dict(),
        "details": {
            "best_valid_auc": trained.best_valid_auc,
            "curve": trained.curve,
            "memory": meter.describe(),
        },
    }
    say(
        f"parent: {trained.steps} steps in {meter.seconds:.0f} s, best valid AUC {trained.best_valid_auc:.4f}"
    )

    inputs = UnlearningInputs(scorer, PARENT, frames.forget, frames.retain, frames.valid)
    runs: dict[str, dict[str, Any]] = {}
    after: dict[str, Predictions] = {}
    for name in sorted(config.methods, key=lambda m: m != REFERENCE):  # the reference first
        say(f"running {name}")
        report = run_unlearning(
            name, inputs, method_config(name, config, recipe), name, Progress(bar=progress)
        )
        after[name] = predict(scorer, name, frames)
        runs[name] = {k: v for k, v in report.to_dict().items() if k != "method"}
        activate(loaded.model, PARENT, trainable=False)  # never delete the active adapter
        unload_adapter(loaded, name)
        say(f"{name}: {report.steps} steps in {report.seconds:.1f} s")

    records = [record_for(PARENT, "before", parent_run, before, before, after[REFERENCE], frames, config)]
    for name in runs:
        role = "exact" if name == REFERENCE else "approximate"
        records.append(
            record_for(name, role, runs[name], after[name], before, after[REFERENCE], frames, config)
        )
    reference_seconds = runs[REFERENCE]["seconds"]
    for record in records:
        record["seconds_vs_retrain"] = (
            record["seconds"] / reference_seconds if reference_seconds > 0 else None
        )
    result: dict[str, Any] = {
        "benchmark": "unlearning",
        "setting": config.setting,
        "machine": machine_info(loaded.device),
        "sizes": frames.sizes(),
        "forget_users": frames.forget_users,
        "config": config.to_dict(),
        "records": records,
    }
    result["aims"] = check_aims(records)
    result["seconds_total"] = time.perf_counter() - started
    return result


def record_for(
    name: str,
    role: str,
    run: dict[str, Any],
    own: Predictions,
    before: Predictions,
    reference: Predictions,
    frames: BenchData,
    config: BenchConfig,
) -> dict[str, Any]:
    """One method's figures (see the module docstring)."""
    rounds, seed = config.bootstrap_rounds, config.seed
    test_labels = frames.test["label"].to_numpy()
    utility = evaluate_probs(name, test_labels, own.test).as_dict()
    forget_labels, unseen_labels = frames.forget["label"].to_numpy(), frames.unseen["label"].to_numpy()
    n = len(frames.unseen)  # equal-size membership inference: the first n forget rows in a seeded order
    members = np.random.default_rng(seed).permutation(len(frames.forget))[:n]
    mia = metrics.membership_inference_auc(
        forget_labels[members], own.forget[members], unseen_labels, own.unseen
    )
    mia_ci = metrics.bootstrap_membership_ci(
        forget_labels[members], own.forget[members], unseen_labels, own.unseen, rounds=rounds, seed=seed
    )
    forget = {
        "samples": len(frames.forget),
        "gold_prob_before": float(np.mean(metrics.gold_probability(forget_labels, before.forget))),
        "gold_prob_after": float(np.mean(metrics.gold_probability(forget_labels, own.forget))),
        "unseen_gold_prob": float(np.mean(metrics.gold_probability(unseen_labels, own.unseen))),
        "mia_samples_each": n,
        "mia_auc": mia,
        "mia_auc_ci95": list(mia_ci),
    }
    for divergence, fn in metrics.DIVERGENCES.items():
        forget[f"{divergence}_to_retrain"] = fn(own.forget, reference.forget)
    test = {k: utility[k] for k in ("samples", "auc", "auc_ci95", "logloss", "accuracy")}
    return {"method": name, "role": role, **run, "test": test, "forget": forget}


# ---------------------------------------------------------------------------------------------- aims


def check_aims(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 3's aims for E2URec, each with its value, target, verdict and the margin (positive: met by,
    negative: missed by).  Empty when E2URec was not run."""
    by_name = {r["method"]: r for r in records}
    if "e2urec" not in by_name or REFERENCE not in by_name:
        return []
    e2u, ref, parent = by_name["e2urec"], by_name[REFERENCE], by_name[PARENT]
    aims = []
    ratio = e2u["seconds"] / ref["seconds"]
    aims.append(_aim("wall time <= 20% of Retrain's", ratio, "<= 0.20", 0.20 - ratio))
    gap = abs(e2u["test"]["auc"] - ref["test"]["auc"])
    aims.append(_aim("test AUC within 0.01 of Retrain's", gap, "|dAUC| <= 0.01", 0.01 - gap))
    jsd = e2u["forget"]["jensen_shannon_to_retrain"]
    others = {
        r["method"]: r["forget"]["jensen_shannon_to_retrain"]
        for r in records
        if r["role"] in ("approximate", "before") and r["method"] != "e2urec"
    }
    best_other = min(others.values()) if others else math.inf
    aims.append(
        _aim(
            "JSD to Retrain on F below every other approximate method's and the parent's",
            jsd,
            f"< {best_other:.6g} ({min(others, key=others.__getitem__) if others else '-'})",
            best_other - jsd,
        )
    )
    distance, parent_distance = abs(e2u["forget"]["mia_auc"] - 0.5), abs(parent["forget"]["mia_auc"] - 0.5)
    aims.append(
        _aim(
            "MIA AUC closer to 0.5 than the parent's",
            e2u["forget"]["mia_auc"],
            f"|x - 0.5| < {parent_distance:.4f} (parent {parent['forget']['mia_auc']:.4f})",
            parent_distance - distance,
        )
    )
    return aims


def _aim(aim: str, value: float, target: str, margin: float) -> dict[str, Any]:
    met = bool(margin > 0 or (margin == 0 and "<=" in target))
    return {"aim": aim, "value": value, "target": target, "met": met, "margin": margin}


# ---------------------------------------------------------------------------------------------- output


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def save_json(result: dict[str, Any], path: Path) -> None:
    """Strict JSON (NaN and infinities become null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """The figures as a fixed-width text table, then the aims."""
    head = (
        f"{'method':<16} {'seconds':>8} {'xRetrain':>8} {'test AUC [95% CI]':>24} {'LogLoss':>8} "
        f"{'Acc':>6} {'JSD->R':>8} {'symKL->R':>8} {'MIA AUC':>8} {'gold F before->after':>21} "
        f"{'params':>8} {'peak MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in result["records"]:
        test, forget = r["test"], r["forget"]
        ci = test["auc_ci95"]
        auc = f"{_fmt(test['auc'], '.4f')} [{_fmt(ci[0], '.3f')}, {_fmt(ci[1], '.3f')}]"
        gold = f"{forget['gold_prob_before']:.4f}->{forget['gold_prob_after']:.4f}"
        name = r["method"] + (" (before)" if r["role"] == "before" else "")
        lines.append(
            f"{name:<16} {r['seconds']:>8.1f} {_fmt(r.get('seconds_vs_retrain'), '.3f'):>8} {auc:>24} "
            f"{_fmt(test['logloss'], '.4f'):>8} {_fmt(test['accuracy'], '.3f'):>6} "
            f"{forget['jensen_shannon_to_retrain']:>8.5f} {forget['symmetric_kl_to_retrain']:>8.5f} "
            f"{_fmt(forget['mia_auc'], '.4f'):>8} {gold:>21} {r['trainable_parameters']:>8} "
            f"{r['peak_memory_bytes'] / 2**20:>8.0f}"
        )
    lines.append("")
    for aim in result.get("aims", []):
        verdict = "MET   " if aim["met"] else "MISSED"
        lines.append(
            f"{verdict} {aim['aim']}: {aim['value']:.4g} "
            f"(target {aim['target']}; margin {aim['margin']:+.4g})"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Six panels, one figure per panel, methods in the same order and colours everywhere."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = result["records"]
    names = [r["method"] + ("\n(before)" if r["role"] == "before" else "") for r in records]
    colours = [
        "#9e9e9e"
        if r["role"] == "before"
        else "#2e7d32"
        if r["role"] == "exact"
        else "#c62828"
        if r["method"] == "e2urec"
        else "#1565c0"
        for r in records
    ]
    x = np.arange(len(records))
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))

    def bars(ax: Any, values: list[float], title: str, fmt: str = "{:.3g}") -> None:
        clean = [0.0 if v is None or not math.isfinite(v) else v for v in values]
        ax.bar(x, clean, color=colours)
        for k, v in enumerate(values):
            ax.annotate(
                "-" if v is None or not math.isfinite(v) else fmt.format(v),
                (k, clean[k]),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(x, names, fontsize=8)
        ax.set_title(title, fontsize=10)

    def points_with_ci(ax: Any, values: list[float], cis: list[list[float]], title: str) -> None:
        low = [v - (ci[0] if ci[0] is not None else v) for v, ci in zip(values, cis, strict=True)]
        high = [(ci[1] if ci[1] is not None else v) - v for v, ci in zip(values, cis, strict=True)]
        ax.errorbar(x, values, yerr=[low, high], fmt="none", ecolor="black", capsize=4)
        ax.scatter(x, values, c=colours, s=60, zorder=3)
        ax.axhline(0.5, color="black", lw=1, ls="--")
        ax.set_xticks(x, names, fontsize=8)
        ax.set_title(title, fontsize=10)

    bars(axes[0, 0], [r["seconds"] for r in records], "wall seconds (parent: its training)")
    for k, r in enumerate(records):
        if r.get("seconds_vs_retrain") is not None and r["role"] != "before":
            axes[0, 0].annotate(
                f"x{r['seconds_vs_retrain']:.2f}", (k, 0), ha="center", va="bottom", fontsize=8, color="white"
            )

    points_with_ci(
        axes[0, 1],
        [r["test"]["auc"] for r in records],
        [r["test"]["auc_ci95"] for r in records],
        "test AUC with bootstrap 95% CI (higher is better)",
    )

    bars(
        axes[0, 2],
        [r["forget"]["jensen_shannon_to_retrain"] for r in records],
        "Jensen-Shannon divergence to Retrain on F, bits (lower is better)",
    )
    bars(
        axes[1, 0],
        [r["forget"]["symmetric_kl_to_retrain"] for r in records],
        "symmetric KL to Retrain on F, nats (lower is better)",
    )

    points_with_ci(
        axes[1, 1],
        [r["forget"]["mia_auc"] for r in records],
        [r["forget"]["mia_auc_ci95"] for r in records],
        "membership-inference AUC, F vs unseen, 95% CI (0.5 is ideal)",
    )

    ax = axes[1, 2]
    golds = [r["forget"]["gold_prob_after"] for r in records]
    ax.scatter(x, golds, c=colours, s=60, zorder=3)
    for k, value in enumerate(golds):
        ax.annotate(
            f"{value:.3f}", (k, value), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
        )
    ax.set_xticks(x, names, fontsize=8)
    ax.set_title("F's mean gold-label probability after unlearning", fontsize=10)
    ax.axhline(
        records[0]["forget"]["gold_prob_before"], color="grey", ls="--", lw=1, label="parent on F (before)"
    )
    unseen = float(np.mean([r["forget"]["unseen_gold_prob"] for r in records if r["role"] == "exact"]))
    ax.axhline(unseen, color="#2e7d32", ls=":", lw=1, label="Retrain on unseen")
    span = [*golds, unseen, records[0]["forget"]["gold_prob_before"]]
    ax.set_ylim(max(0.0, min(span) - 0.05), min(1.0, max(span) + 0.05))
    ax.legend(fontsize=8, loc="lower right")

    sizes, machine = result["sizes"], result["machine"]
    fig.suptitle(
        f"Unlearning benchmark ({result['setting']}): {sizes['forget_users']} of {sizes['users']} users "
        f"forgotten ({sizes['forget']} of {sizes['train']} training samples), test n={sizes['test']}; "
        f"{machine['device']}, {machine['cpu_count']} CPUs",
        fontsize=11,
    )
    verdicts = "   ".join(
        f"{'MET' if a['met'] else 'MISSED'}: {a['aim']} ({a['value']:.3g})" for a in result.get("aims", [])
    )
    fig.text(0.5, 0.005, "E2URec aims - " + verdicts, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
