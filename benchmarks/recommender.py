"""Adapter v1 quality against the two non-LLM references, with a learning curve.  ``e2u bench recommender``.

Trains adapter v1 on the train split (early stopping on a validation subset, never on test), keeps
snapshots of the LoRA weights at the curve points, then scores one fixed random test subset with every
snapshot and with the references.  Writes JSON + a PNG learning curve and saves the final adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from benchmarks import report
from benchmarks.report import Machine, evaluation_from_dict, number
from core.ml.data import PreparedData
from core.ml.evaluation import REFERENCES, Evaluation, evaluate_probs
from core.ml.model import ModelConfig, load_base, lora_state, new_adapter, save_adapter
from core.ml.scoring import Scorer
from core.ml.training import TrainConfig, TrainResult, train_adapter
from core.ml.workflows import scorer_for

ADAPTER = "v1"
Log = Callable[[str], None]


@dataclass(frozen=True)
class CurvePoint:
    """The adapter's test figures after ``step`` training steps (``train_samples`` samples seen)."""

    step: int
    train_samples: int
    test: Evaluation
    score_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "train_samples": self.train_samples,
            **self.test.as_dict(),
            "score_seconds": self.score_seconds,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CurvePoint:
        return cls(raw["step"], raw["train_samples"], evaluation_from_dict(raw), raw["score_seconds"])


@dataclass(frozen=True)
class RecommenderResult:
    """The learning curve on ``test_subset`` test samples, and the references on it and on all of test."""

    command: str
    machine: str
    base: str
    train_config: TrainConfig
    train_result: TrainResult
    adapter_sha256: str
    test_subset: int
    curve: list[CurvePoint]
    references_on_subset: list[Evaluation]
    references_on_full_test: list[Evaluation]

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in ("command", "machine", "base")},
            "train_config": self.train_config.to_dict(),
            "train_result": asdict(self.train_result),
            "adapter_sha256": self.adapter_sha256,
            "test_subset": self.test_subset,
            "curve": [p.to_dict() for p in self.curve],
            "references_on_subset": [e.as_dict() for e in self.references_on_subset],
            "references_on_full_test": [e.as_dict() for e in self.references_on_full_test],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RecommenderResult:
        trained = raw["train_result"]
        return cls(
            **{k: raw[k] for k in ("command", "machine", "base", "adapter_sha256", "test_subset")},
            train_config=TrainConfig.from_dict(raw["train_config"]),
            train_result=TrainResult(**{**trained, "best_valid_auc": number(trained["best_valid_auc"])}),
            curve=[CurvePoint.from_dict(p) for p in raw["curve"]],
            references_on_subset=[evaluation_from_dict(e) for e in raw["references_on_subset"]],
            references_on_full_test=[evaluation_from_dict(e) for e in raw["references_on_full_test"]],
        )


def run_recommender(
    model: ModelConfig,
    data: PreparedData,
    train: TrainConfig,
    test_samples: int,
    adapter_out: Path,
    command: str,
    log: Log | None = None,
) -> RecommenderResult:
    """Train adapter v1 with ``train`` (a curve point every ``train.eval_every`` steps), save it under
    ``adapter_out``, and score ``test_samples`` random test samples with every snapshot and reference.
    ``command`` is recorded as how the run was asked for."""
    say = log or (lambda _message: None)
    train_split, valid, test = data.split("train"), data.split("valid"), data.split("test")
    subset = test.sample(n=min(test_samples, len(test)), random_state=train.seed).reset_index(drop=True)
    loaded = load_base(model)
    new_adapter(loaded, train.lora, ADAPTER, seed=train.seed)
    scorer = scorer_for(loaded, data)
    snapshots = {0: lora_state(loaded.model, ADAPTER)}

    def snapshot(step: int, _total: int) -> None:
        if step % train.eval_every == 0:
            snapshots[step] = lora_state(loaded.model, ADAPTER)

    trained = train_adapter(scorer, ADAPTER, train_split, valid, train, progress=True, on_step=snapshot)
    final = lora_state(loaded.model, ADAPTER)
    metadata = {"kind": "train", "train": train.to_dict(), "data_sha256": data.content_hash()}
    sha = save_adapter(loaded, ADAPTER, adapter_out, {**metadata, "result": asdict(trained)})
    curve = []
    for step, state in sorted(snapshots.items()):
        curve.append(_curve_point(scorer, state, step, train.batch_size, subset))
        say(f"step {step}: test AUC {curve[-1].test.auc:.4f} on {len(subset)} samples")
    _load_lora(scorer, final)
    return RecommenderResult(
        command=command,
        machine=Machine.here(loaded.device).summary(),
        base=model.base,
        train_config=train,
        train_result=trained,
        adapter_sha256=sha,
        test_subset=len(subset),
        curve=curve,
        references_on_subset=_references(train_split, subset),
        references_on_full_test=_references(train_split, test),
    )


def _load_lora(scorer: Scorer, state: dict[str, torch.Tensor]) -> None:
    named = dict(scorer.loaded.model.named_parameters())
    with torch.no_grad():
        for key, value in state.items():
            named[key].copy_(value)


def _curve_point(
    scorer: Scorer, state: dict[str, torch.Tensor], step: int, batch_size: int, subset: pd.DataFrame
) -> CurvePoint:
    _load_lora(scorer, state)
    started = time.perf_counter()
    probs = scorer.score(subset, progress=True, desc=f"test @ step {step}")
    test = evaluate_probs(f"step {step}", subset["label"].to_numpy(), probs)
    return CurvePoint(step, step * batch_size, test, time.perf_counter() - started)


def _references(train: pd.DataFrame, target: pd.DataFrame) -> list[Evaluation]:
    labels = target["label"].to_numpy()
    return [
        evaluate_probs(name, labels, fn(train, target), calibrated=False) for name, fn in REFERENCES.items()
    ]


def plot(result: RecommenderResult, path: Path) -> None:
    """The adapter's test AUC (95% band) against training samples seen, the references as lines."""
    fig, ax = report.figure(1, 1, (7, 4.5))
    xs = [p.train_samples for p in result.curve]
    ax.plot(xs, [p.test.auc for p in result.curve], marker="o", label="SmolLM2 + LoRA adapter (test AUC)")
    ax.fill_between(xs, *zip(*(p.test.auc_ci95 for p in result.curve), strict=True), alpha=0.2)
    for ref, style in zip(result.references_on_subset, ["--", ":"], strict=True):
        ax.axhline(ref.auc, linestyle=style, color="gray", label=f"{ref.name} ({ref.auc:.3f})")
    ax.axhline(0.5, color="black", linewidth=0.5)
    ax.set_xlabel("training samples seen")
    ax.set_ylabel(f"test AUC ({result.test_subset} samples, 95% bootstrap CI)")
    ax.set_title("Adapter v1 learning curve on MovieLens-100K (CPU budget)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, path, dpi=120)
