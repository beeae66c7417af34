"""Verification of an unlearned candidate on evidence, not on point gates (DESIGN "Verification").

No retrained model exists in production, so the verifier compares each adapter with the base model and
with users held out of training entirely (split "holdout", ``core.ml.data.holdout_users``):

- the base model (adapter disabled), the parent and the child score the forget set F; their per-sample
  ``evidence.gold_log_ratio`` give the parent's and the child's memorisation tests and the paired change
  child - parent on F;
- the base model and the parent score a capped sample of held-out users (``reference_sample``): with
  the population the parent learned from (the training samples less F), the parent's
  ``MatchedReference`` (what a never-trained user with F's agreement with the population shows; see
  ``evidence.matched_reference``), else its unmatched ``ReferenceNull``;
- parent and child score the fixed utility subset (``utility_subset`` of the valid split);
- ``evidence.decide`` gives the verdict class (forgotten / no_prior_signal / inconclusive / failed), its
  reasons and every figure with its interval and MDE.

Cost: the figures of a version and of the base model on the held-out sample and the utility subset do not
depend on the job.  ``ScoreCache`` keeps them beside the adapter's weights (``SCORES_FILE``), so a version's
own figures are computed once, not once per job: the child's utility scores are written beside it, the
base model's held-out scores are carried from version to version, and a promoted version's own held-out
scores are computed right after its promotion (``warm_version_scores``, off the verify step of its first
job as a parent; a version that missed it gets them at that first job).  Scores of F are never stored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.ml import evidence, metrics
from core.ml.evidence import EvidenceConfig, Verdict
from core.ml.model import load_adapter, unload_adapter
from core.ml.scoring import Scorer
from core.serialization import json_safe

SCORES_FILE = "verification-scores.json"  # beside an adapter's weights: its and the base's cached scores
NEVER_TRAINED_ON = (
    "never trained on: no training sample in scope (held-out or new data); no adapter version learned it, "
    "exclusion and deletion carry the guarantee"
)


@dataclass(frozen=True)
class VerificationSizes:
    """How much data the verifier scores; stored with each job (``core.services.job_config.JobConfig``).

    ``valid_samples``: the fixed utility subset; ``max_forget_samples``: cap on F; ``reference_users``
    x ``reference_samples``: the held-out users' sample that calibrates the memorisation test (the most
    users first: the null's degrees of freedom are the users less one); ``seed``: the draws.
    """

    valid_samples: int = 256
    max_forget_samples: int = 512
    reference_users: int = 40
    reference_samples: int = 20
    seed: int = 0


@dataclass(frozen=True)
class VerificationResult:
    """The verdict class, why, and the JSON-safe figures it rests on (``evidence``: ``Evidence.to_dict``)."""

    verdict: Verdict
    reasons: tuple[str, ...]
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the candidate may be promoted: every class but failed (the class goes on record)."""
        return self.verdict != Verdict.FAILED


def never_trained_on() -> dict[str, Any]:
    """The verdict figures of a batch with no training sample in scope (e.g. a held-out user)."""
    return {"verdict": str(Verdict.NO_PRIOR_SIGNAL), "reasons": [NEVER_TRAINED_ON], "forget_samples": 0}


# ------------------------------------------------------------------------------------------ the samples


def sample_keys(frame: pd.DataFrame) -> list[str]:
    """A key per sample that changes when its prompt's data does: user, item and history."""
    return [
        hashlib.sha256(f"{u}\x1f{i}\x1f{h}".encode()).hexdigest()[:24]
        for u, i, h in zip(frame["user_id"], frame["item_id"], frame["history"], strict=True)
    ]


def _rank(values: list[str], seed: int) -> list[int]:
    """Positions of ``values`` ordered by sha256(seed:value): a draw that does not move when other rows
    are added or deleted."""
    digests = [hashlib.sha256(f"{seed}:{v}".encode()).hexdigest() for v in values]
    return sorted(range(len(values)), key=digests.__getitem__)


def _draw(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    order = _rank(sample_keys(frame), seed)[:n]
    return frame.iloc[sorted(order)].reset_index(drop=True)


def utility_subset(valid: pd.DataFrame, sizes: VerificationSizes) -> pd.DataFrame:
    """The fixed utility subset: ``valid_samples`` of ``valid`` by a stable hash draw."""
    return _draw(valid, sizes.valid_samples, sizes.seed)


def forget_subset(forget: pd.DataFrame, sizes: VerificationSizes) -> pd.DataFrame:
    """F capped at ``max_forget_samples`` by a stable hash draw."""
    return _draw(forget, sizes.max_forget_samples, sizes.seed)


def reference_sample(holdout: pd.DataFrame, sizes: VerificationSizes) -> pd.DataFrame:
    """``reference_users`` held-out users (a stable hash draw) with at most ``reference_samples`` samples
    each (the same kind of draw within each user)."""
    if holdout.empty:
        return holdout.reset_index(drop=True)
    users = sorted(set(map(str, holdout["user_id"])))
    chosen = {users[k] for k in _rank(users, sizes.seed)[: sizes.reference_users]}
    parts = [
        _draw(group, sizes.reference_samples, sizes.seed)
        for user, group in holdout.groupby("user_id", sort=True)
        if str(user) in chosen
    ]
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------------------ the cache


class ScoreCache:
    """P(positive) of one adapter version (``"adapter"``) and of its base model (``"base"``) by
    ``sample_keys``, in a JSON file beside the version's weights (``path`` None: nothing kept).
    ``save`` keeps only the keys of the samples asked for since loading, so that rows deleted since (an
    erasure) leave the file at its next write."""

    SECTIONS = ("adapter", "base")

    def __init__(self, path: Path | None) -> None:
        self.path = path
        raw: dict[str, Any] = {}
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError):
                raw = {}  # an unreadable cache is recomputed, never trusted
        self.scores: dict[str, dict[str, float]] = {s: dict(raw.get(s) or {}) for s in self.SECTIONS}
        self.used: dict[str, set[str]] = {s: set() for s in self.SECTIONS}
        self.computed = dict.fromkeys(self.SECTIONS, 0)
        self.reused = dict.fromkeys(self.SECTIONS, 0)

    def score(self, scorer: Scorer, adapter: str | None, frame: pd.DataFrame) -> np.ndarray:
        """P(positive) on ``frame`` of adapter ``adapter`` (None: the base model), scoring only samples
        not cached yet."""
        section = "base" if adapter is None else "adapter"
        keys, known = sample_keys(frame), self.scores[section]
        missing = [k for k, key in enumerate(keys) if key not in known]
        if missing:
            fresh = _score(scorer, adapter, frame.iloc[missing])
            known.update({keys[k]: float(p) for k, p in zip(missing, fresh, strict=True)})
        self.used[section].update(keys)
        self.computed[section] += len(missing)
        self.reused[section] += len(keys) - len(missing)
        return np.array([known[key] for key in keys], dtype=np.float64)

    def carry_base(self, parent: ScoreCache) -> None:
        """Take the base model's scores that ``parent`` used (the base model is the same for both)."""
        self.scores["base"].update({k: parent.scores["base"][k] for k in parent.used["base"]})
        self.used["base"].update(parent.used["base"])

    def save(self) -> None:
        if self.path is None or not self.path.parent.is_dir():
            return
        kept = {s: {k: v for k, v in self.scores[s].items() if k in self.used[s]} for s in self.SECTIONS}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(kept, sort_keys=True))
        temporary.replace(self.path)

    def counts(self) -> dict[str, dict[str, int]]:
        return {"computed": dict(self.computed), "reused": dict(self.reused)}


@contextmanager
def _active(scorer: Scorer, adapter: str | None) -> Iterator[None]:
    """``adapter`` active for the block; None: the base model alone (peft's ``disable_adapter``)."""
    model = scorer.loaded.model
    if adapter is None:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(adapter)
        yield


def _score(scorer: Scorer, adapter: str | None, frame: pd.DataFrame) -> np.ndarray:
    if frame.empty:
        return np.zeros(0)
    with _active(scorer, adapter):
        return scorer.score(frame)


# ------------------------------------------------------------------------------------------ the verdict


def _by_user(frame: pd.DataFrame, values: np.ndarray) -> list[np.ndarray]:
    users = frame["user_id"].astype(str).to_numpy()
    return [values[users == user] for user in sorted(set(users))]


def _version_scores(
    scorer: Scorer, adapter: str, cache: ScoreCache, h_frame: pd.DataFrame, v_frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A version's own figures as a parent: the base model's and the adapter's held-out scores and the
    adapter's utility scores, through ``cache``."""
    return (
        cache.score(scorer, None, h_frame),
        cache.score(scorer, adapter, h_frame),
        cache.score(scorer, adapter, v_frame),
    )


def warm_version_scores(
    scorer: Scorer,
    folder: Path,
    holdout: pd.DataFrame,
    valid: pd.DataFrame,
    sizes: VerificationSizes,
    name: str = "warm_up",
) -> dict[str, dict[str, int]]:
    """Compute once the figures that a version needs as a parent (``_version_scores`` on the held-out
    sample and the utility subset that ``verify_candidate`` will draw with ``sizes``) and store them in its
    ``ScoreCache`` beside its weights in ``folder``; only what is not cached yet is scored.  Call it after
    the version is promoted, so that its first job as a parent does not pay for it.  The adapter is loaded
    as ``name`` and freed after; ``scorer``'s model is left with the adapter that was active (if any).
    Returns the cache's counts (scores computed and reused)."""
    cache = ScoreCache(folder / SCORES_FILE)
    model = scorer.loaded.model
    loaded_before = set(getattr(model, "peft_config", {}))  # adapters loaded on a peft model
    active = getattr(model, "active_adapter", None) if loaded_before else None
    load_adapter(scorer.loaded, folder, name)
    try:
        _version_scores(scorer, name, cache, reference_sample(holdout, sizes), utility_subset(valid, sizes))
    finally:
        if isinstance(active, str) and active in loaded_before:
            scorer.loaded.model.set_adapter(active)
        unload_adapter(scorer.loaded, name)
    cache.save()
    return cache.counts()


def verify_candidate(
    scorer: Scorer,
    parent_name: str,
    child_name: str,
    forget: pd.DataFrame,
    holdout: pd.DataFrame,
    valid: pd.DataFrame,
    config: EvidenceConfig,
    sizes: VerificationSizes,
    parent_cache: ScoreCache | None = None,
    child_cache: ScoreCache | None = None,
    teacher_divergence: dict[str, float] | None = None,
    population: pd.DataFrame | None = None,
) -> VerificationResult:
    """The verdict on ``child_name`` against ``parent_name`` (both loaded in ``scorer``'s model).

    ``forget``: F (non-empty; capped by ``forget_subset``); ``holdout``: samples of users held out of
    training (``reference_sample`` draws from them); ``valid``: the valid split (``utility_subset`` draws
    the fixed utility set).  ``parent_cache``/``child_cache``: the versions' ``ScoreCache`` (the child's
    takes the base model's scores from the parent's); not saved here.  ``population``: the training
    samples the parent learned from (item, label; F's samples are left out here), which match the
    reference to F (``evidence.label_agreement``); None: the unmatched population reference.  A failed
    verdict when there is no calibration (too few held-out users with samples, or an utility set with one
    label only).
    Leaves ``child_name`` as the active adapter.
    """
    if forget.empty:
        raise ValueError("verify_candidate needs a non-empty forget set (see never_trained_on)")
    parent_cache = parent_cache or ScoreCache(None)
    child_cache = child_cache or ScoreCache(None)
    started = time.perf_counter()
    f_frame = forget_subset(forget, sizes)
    h_frame = reference_sample(holdout, sizes)
    v_frame = utility_subset(valid, sizes)
    labels_f, labels_h = f_frame["label"].to_numpy(), h_frame["label"].to_numpy()
    base_f, parent_f, child_f = (_score(scorer, who, f_frame) for who in (None, parent_name, child_name))
    base_h, parent_h, parent_v = _version_scores(scorer, parent_name, parent_cache, h_frame, v_frame)
    child_v = child_cache.score(scorer, child_name, v_frame)
    child_cache.carry_base(parent_cache)  # for the child's own jobs as a parent
    scorer.loaded.model.set_adapter(child_name)
    figures: dict[str, Any] = {
        "samples": {
            "forget": len(f_frame),
            "forget_total": len(forget),
            "reference_users": int(h_frame["user_id"].nunique()) if len(h_frame) else 0,
            "reference_samples": len(h_frame),
            "valid": len(v_frame),
        },
        "sizes": sizes.__dict__.copy(),
        "scores": {
            "forget": {"base": len(f_frame), "parent": len(f_frame), "child": len(f_frame)},
            "parent_cache": parent_cache.counts(),
            "child_cache": child_cache.counts(),
        },
        "divergence_child_parent_forget": {
            name: fn(child_f, parent_f) for name, fn in metrics.DIVERGENCES.items()
        },
    }
    if teacher_divergence:
        figures["divergence_to_forgetting_teacher"] = teacher_divergence
    # The child's memorisation tests use the parent's held-out null (``decide``'s default).  Scoring the
    # child on the held-out sample too would give it its own, stricter null (and its figures for its
    # next job); on the canary tests E2URec children then kept an excess of ~0.02 nats over 14 look-alike
    # held-out users, significant: a choice to make with real data, not here.
    parent_lr = evidence.gold_log_ratio(labels_f, parent_f, base_f)
    child_lr = evidence.gold_log_ratio(labels_f, child_f, base_f)
    reference_lr = _by_user(h_frame, evidence.gold_log_ratio(labels_h, parent_h, base_h))
    try:
        reference: list[np.ndarray] | evidence.MatchedReference = reference_lr
        covariates = None
        if population is not None:
            agreement = _agreement(population, forget)
            covariates = agreement(f_frame)
            reference = evidence.matched_reference(reference_lr, _by_user(h_frame, agreement(h_frame)))
            figures["reference"] = reference.to_dict()
        found = evidence.decide(
            parent_forget_log_ratios=parent_lr,
            child_forget_log_ratios=child_lr,
            reference=reference,
            utility_labels=v_frame["label"].to_numpy(),
            parent_utility_probs=parent_v,
            child_utility_probs=child_v,
            config=config,
            forget_covariates=covariates,
        )
    except ValueError as error:
        reason = f"cannot verify: {error}"  # no calibration (held-out users) or no usable utility set
        figures["seconds"] = time.perf_counter() - started
        return VerificationResult(Verdict.FAILED, (reason,), _finish(figures, Verdict.FAILED, [reason]))
    figures["evidence"] = found.to_dict()
    figures["seconds"] = time.perf_counter() - started
    return VerificationResult(found.verdict, found.reasons, _finish(figures, found.verdict, found.reasons))


def _agreement(population: pd.DataFrame, forget: pd.DataFrame) -> Callable[[pd.DataFrame], np.ndarray]:
    """``evidence.label_agreement`` of a frame's samples with ``population`` less F's (user, item) pairs:
    the population the parent learned from, without the user under test."""
    in_forget = pd.MultiIndex.from_frame(population[["user_id", "item_id"]].astype(str)).isin(
        pd.MultiIndex.from_frame(forget[["user_id", "item_id"]].astype(str))
    )
    kept = population[~in_forget]
    items, labels = kept["item_id"].to_numpy(), kept["label"].to_numpy()

    def agreement(frame: pd.DataFrame) -> np.ndarray:
        return evidence.label_agreement(frame["item_id"].to_numpy(), frame["label"].to_numpy(), items, labels)

    return agreement


RETRAINED_WITHOUT_FORGET_SET = (
    "exact retrain without a forget set: the data in scope was deleted before unlearning, and the child was "
    "trained from the base model on stored data that no longer holds it; forgetting is not measured (there "
    "is nothing left to measure it on), provenance and utility are"
)


def verify_exact_retrain(
    scorer: Scorer,
    parent_name: str,
    child_name: str,
    valid: pd.DataFrame,
    config: EvidenceConfig,
    sizes: VerificationSizes,
    parent_cache: ScoreCache | None = None,
    child_cache: ScoreCache | None = None,
) -> VerificationResult:
    """The verdict on an exact retrain (``child_name``, trained from the base) when no forget set is left:
    ``retrained`` unless the utility set shows a loss, failed when the whole interval of the AUC
    difference child - parent lies below ``-utility_margin``.  The burden is the reverse of
    ``verify_candidate``'s on purpose: the parent carries the erased data and the retrain is the
    reference method, so only evidence of harm keeps the parent serving; a utility set too small to
    judge does not.  Provenance (the method, trained from the base, on data without the scope) is the
    caller's record.  Leaves ``child_name`` as the active adapter."""
    parent_cache = parent_cache or ScoreCache(None)
    child_cache = child_cache or ScoreCache(None)
    started = time.perf_counter()
    v_frame = utility_subset(valid, sizes)
    parent_v = parent_cache.score(scorer, parent_name, v_frame)
    child_v = child_cache.score(scorer, child_name, v_frame)
    child_cache.carry_base(parent_cache)
    scorer.loaded.model.set_adapter(child_name)
    figures: dict[str, Any] = {
        "samples": {"forget": 0, "forget_total": 0, "valid": len(v_frame)},
        "sizes": sizes.__dict__.copy(),
    }
    try:
        utility = evidence.compare_utility(v_frame["label"].to_numpy(), parent_v, child_v, config)
    except ValueError as error:
        reason = f"cannot verify: {error}"
        figures["seconds"] = time.perf_counter() - started
        return VerificationResult(Verdict.FAILED, (reason,), _finish(figures, Verdict.FAILED, [reason]))
    figures["utility"] = asdict(utility)
    figures["seconds"] = time.perf_counter() - started
    d, margin = utility.difference, config.utility_margin
    said = f"AUC difference {d.value:.4f} [{d.low:.4f}, {d.high:.4f}] on {utility.n} samples"
    if d.high < -margin:
        reasons: tuple[str, ...] = (f"utility lost: {said} lies wholly below -{margin}",)
        return VerificationResult(Verdict.FAILED, reasons, _finish(figures, Verdict.FAILED, reasons))
    reasons = (RETRAINED_WITHOUT_FORGET_SET, f"utility kept: {said}, not wholly below -{margin}")
    return VerificationResult(Verdict.RETRAINED, reasons, _finish(figures, Verdict.RETRAINED, reasons))


def _finish(figures: dict[str, Any], verdict: Verdict, reasons: Any) -> dict[str, Any]:
    return dict(json_safe({"verdict": str(verdict), "reasons": list(reasons), **figures}))
