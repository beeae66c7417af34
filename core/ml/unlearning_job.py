"""The ML part of one unlearning job, in one call: load the parent adapter beside the base model, unlearn
the forget set into a child adapter, verify the child against the parent on data it never trained on, save
the child's weights, and free both adapters.  No database here: the service collects the data before and
records the outcome after (``core.services.pipeline``)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from core.ml.data import SAMPLE_COLUMNS
from core.ml.evidence import EvidenceConfig
from core.ml.model import LoadedModel, load_adapter, save_adapter, unload_adapter
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.unlearning.base import UnlearningInputs, run_unlearning
from core.ml.unlearning.progress import Progress
from core.ml.verification import (
    SCORES_FILE,
    ScoreCache,
    VerificationSizes,
    utility_subset,
    verify_candidate,
    verify_exact_retrain,
)
from core.serialization import json_safe


@dataclass(frozen=True)
class JobData:
    """The samples of one job (frames with at least ``core.ml.data.SAMPLE_COLUMNS``) and its catalog."""

    forget: pd.DataFrame  # training samples in the batch's scopes: what the child must forget (F)
    retain: pd.DataFrame  # the usable training samples
    valid: pd.DataFrame  # usable validation samples; the utility check draws a fixed subset
    holdout: pd.DataFrame  # usable samples of users held out of training: the memorisation test's null
    catalog: Catalog  # titles and usable profiles, for the prompts


@dataclass(frozen=True)
class UnlearningPlan:
    """How to unlearn and verify: the method (registered name and JSON config), the verifier's
    statistics and the sizes (and seed) of its samples."""

    method: str
    method_config: Mapping[str, Any]
    evidence: EvidenceConfig
    sizes: VerificationSizes


@dataclass(frozen=True)
class Candidate:
    """The child adapter: its verdict and figures, and where its weights were saved."""

    passed: bool  # the verdict allows promotion (any class but failed)
    verdict: str  # core.ml.evidence.Verdict
    reasons: tuple[str, ...]  # why this verdict
    figures: dict[str, Any]  # JSON-safe: the evidence, sample counts, timings, the method's report
    folder: Path
    sha256: str  # of the weights (the version's content id)


class JobProgress(Protocol):
    """What the job's owner hears while the model works (the service renews its lease on each)."""

    def unlearning_started(self) -> None: ...

    def unlearning_step(self, done: int, total: int) -> None: ...

    def verification_started(self) -> None: ...


def unlearn_and_verify(
    loaded: LoadedModel,
    parent_folder: Path,
    data: JobData,
    plan: UnlearningPlan,
    child_folder: Path,
    metadata: Mapping[str, Any],
    progress: JobProgress,
    name: str = "job",
    score_batch_size: int = 16,
    parent_sha256: str | None = None,
) -> Candidate:
    """Unlearn ``data.forget`` from the adapter in ``parent_folder`` with ``plan``'s method, verify the
    child, and save it (weights plus ``metadata`` as ``e2u.json``) into ``child_folder``, which is
    replaced.  ``data.forget`` may be empty only for a method that does not need it (the exact retrain,
    after the data in scope was deleted before unlearning): the child is then verified on utility alone
    (``verify_exact_retrain``).
    Both adapters (loaded as ``{name}_parent`` and
    ``{name}_child``) are freed whatever happens; ``loaded`` is left as it was found.  The parent's and
    the child's cached scores (``ScoreCache``) are read from and written beside their weights."""
    valid = utility_subset(data.valid, plan.sizes)
    parent_cache = ScoreCache(parent_folder / SCORES_FILE)
    child_cache = ScoreCache(None)
    scorer = Scorer(
        loaded, PromptBuilder(loaded.tokenizer, data.catalog, loaded.prompt), batch_size=score_batch_size
    )
    parent_name, child_name = f"{name}_parent", f"{name}_child"
    try:
        load_adapter(loaded, parent_folder, parent_name, sha256=parent_sha256)
        progress.unlearning_started()
        unlearn_started = time.perf_counter()
        inputs = UnlearningInputs(
            scorer,
            parent_name,
            data.forget[SAMPLE_COLUMNS],
            data.retain[SAMPLE_COLUMNS],
            valid[SAMPLE_COLUMNS],
        )
        report = run_unlearning(
            plan.method,
            inputs,
            dict(plan.method_config),
            child_name,
            progress=Progress(lambda _phase, done, total: progress.unlearning_step(done, total)),
        )
        unlearn_seconds = time.perf_counter() - unlearn_started
        progress.verification_started()
        if data.forget.empty:  # an exact retrain after the data in scope was deleted
            result = verify_exact_retrain(
                scorer, parent_name, child_name, valid, plan.evidence, plan.sizes, parent_cache, child_cache
            )
        else:
            result = verify_candidate(
                scorer,
                parent_name,
                child_name,
                data.forget,
                data.holdout,
                valid,
                plan.evidence,
                plan.sizes,
                parent_cache,
                child_cache,
                report.details.get("teacher_divergence"),
                population=data.retain,
            )
        shutil.rmtree(child_folder, ignore_errors=True)
        sha256 = save_adapter(loaded, child_name, child_folder, dict(metadata))
        parent_cache.save()
        child_cache.path = child_folder / SCORES_FILE
        child_cache.save()
    finally:
        unload_adapter(loaded, child_name)
        unload_adapter(loaded, parent_name)
    figures = json_safe(
        {
            **result.figures,
            "forget_samples": len(data.forget),
            "retain_samples": len(data.retain),
            "unlearning": report.to_dict(),
            "seconds": {"unlearn": unlearn_seconds, "verify": result.figures.get("seconds")},
        }
    )
    return Candidate(result.passed, str(result.verdict), result.reasons, figures, child_folder, sha256)
