"""The unlearning pipeline of one job: collect -> unlearn -> verify -> register -> promote -> purge ->
certify, resumable and fenced.

Transactions: the edge passes ``checkpoint`` (its session's commit); the pipeline calls it at each phase
boundary and heartbeat so that progress is visible and the lease stays alive, and never holds a
transaction open during model computation.  Resume points: before ``register`` a job starts again from
``collect`` (nothing durable was produced); from ``promote`` on, it continues where it stopped.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import Certificate, ErasureRequest, UnlearningJob, utcnow
from core.db.repositories import adapters as adapter_repo
from core.db.repositories import audit as audit_repo
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import erasures as erasure_repo
from core.db.repositories import jobs as job_repo
from core.events import EventPublisher, promotion_event
from core.ml.data import SAMPLE_COLUMNS
from core.ml.model import LoadedModel, load_adapter, save_adapter, unload_adapter
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.unlearning.base import UnlearningInputs, run_unlearning
from core.ml.unlearning.progress import Progress
from core.services import batching, registry
from core.services.batching import Thresholds
from core.services.certificates import json_safe, sign_certificate
from core.services.errors import LeaseLost, StalePromotion
from core.services.prepared_data import ScopeToPurge, purge_prepared
from core.services.verification import equal_size, verify_candidate

log = logging.getLogger(__name__)

PHASES = ("queued", "collect", "unlearn", "verify", "register", "promote", "purge", "certify", "done")
PROGRESS = {
    "collect": 0.05,
    "unlearn": 0.1,
    "verify": 0.7,
    "register": 0.8,
    "promote": 0.85,
    "purge": 0.9,
    "certify": 0.95,
    "done": 1.0,
}
UNLEARN_SPAN = (0.1, 0.65)
HEARTBEAT_EVERY_SECONDS = 2.0


@dataclass
class PipelineRuntime:
    """What a worker process brings: the cached base model and where adapters live.

    ``loaded``: the base model (adapters are loaded beside it for a job and freed after);
    ``lease_seconds``: how long a heartbeat keeps the job ours; ``signing_key``: certificate HMAC key;
    ``prepared_data_dir``: the prepared data folder (``core.ml.data.save_prepared`` output) that the purge
    phase rewrites without the erased scope (None: there is none to purge).
    """

    loaded: LoadedModel
    adapters_dir: Path
    worker_id: str
    signing_key: str
    lease_seconds: float = 120.0
    publisher: EventPublisher | None = None
    score_batch_size: int = 16
    clock: Callable[[], datetime] = field(default=utcnow)
    prepared_data_dir: Path | None = None


@dataclass
class JobOutcome:
    job_id: int
    status: str  # succeeded / failed / skipped (someone else holds it or it is finished) / lease_lost
    reason: str | None = None
    follow_up_jobs: list[int] = field(default_factory=list)  # the edge enqueues these after its commit


class _Run:
    """One attempt at one job; ``checkpoint`` commits."""

    def __init__(
        self, session: Session, job: UnlearningJob, runtime: PipelineRuntime, checkpoint: Callable[[], None]
    ):
        self.session, self.job, self.rt, self.checkpoint = session, job, runtime, checkpoint
        self.request_ids = job_repo.request_ids(session, job.id)
        self._last_beat = 0.0

    # ------------------------------------------------------------------ lease and progress
    def beat(
        self, phase: str | None = None, progress: float | None = None, force: bool = True, **values: Any
    ) -> None:
        if not force and time.monotonic() - self._last_beat < HEARTBEAT_EVERY_SECONDS:
            return
        if phase is not None:
            values["phase"] = phase
            values.setdefault("progress", PROGRESS.get(phase, 0.0))
        if progress is not None:
            values["progress"] = progress
        ok = job_repo.heartbeat(
            self.session, self.job.id, self.rt.worker_id, self.rt.clock(), self.rt.lease_seconds, **values
        )
        if not ok:
            raise LeaseLost(f"job {self.job.id}: lease lost to another worker")
        self.checkpoint()
        self._last_beat = time.monotonic()

    def requests(self) -> list[ErasureRequest]:
        return erasure_repo.for_job(self.session, self.request_ids)

    # ------------------------------------------------------------------ phases
    def collect(self) -> dict[str, Any]:
        self.beat("collect")
        forget = catalog_repo.scope_interactions(self.session, self.request_ids, splits=["train"])
        for request in self.requests():
            scoped = forget[forget["user_id"] == request.user_id]
            if request.scope == "items":
                scoped = scoped[scoped["item_id"].isin(erasure_repo.scope_items(self.session, request.id))]
            request.forget_samples = len(scoped)
        data = {
            "forget": forget.drop_duplicates("id").reset_index(drop=True),
            "retain": catalog_repo.usable_interactions(self.session, splits=["train"]),
            "valid": catalog_repo.usable_interactions(self.session, splits=["valid"]),
            "unseen": catalog_repo.usable_interactions(self.session, splits=["test"]),
            "catalog": Catalog(
                catalog_repo.titles(self.session), catalog_repo.profiles(self.session, usable_only=False)
            ),
        }
        self.beat(progress=PROGRESS["unlearn"])
        return data

    def rebase(self) -> None:
        """Take the version active now as the parent (DESIGN: parent P is the active version).  A job
        formed beside another, or before it, would otherwise start from a parent that the other job's
        promotion superseded and destroyed.  Safe only before anything durable exists (before register);
        promotion stays fenced on the alias counter recorded here."""
        active = registry.active_adapter(self.session)
        job = self.job
        if active is not None and (job.parent_version_id, job.expected_alias_counter) != (
            active.version_id,
            active.counter,
        ):
            self.beat(parent_version_id=active.version_id, expected_alias_counter=active.counter)

    def unlearn_verify_register(self) -> JobOutcome | None:
        """Phases collect..register; an outcome when the job ends here (failed gate, nothing to do)."""
        job, cfg = self.job, self.job.config
        self.rebase()
        parent = registry.get_version(self.session, job.parent_version_id or "")
        if parent.base_model != self.rt.loaded.config.base:
            return self.fail(
                f"parent {parent.id} is for base model {parent.base_model!r}, this worker has "
                f"{self.rt.loaded.config.base!r}",
                count_retry=True,
            )
        data = self.collect()
        if data["forget"].empty:
            # the adapters only ever trained on the train split: nothing in the weights to unlearn
            adapter_repo.add_clean_of(self.session, parent.id, self.request_ids)
            self.beat(
                "purge",
                child_version_id=parent.id,
                verdict="not_needed",
                metrics={
                    "forget_samples": 0,
                    "note": "no training sample in scope; no adapter trained on it",
                },
            )
            return None
        seed = int(cfg.get("seed", 0))
        valid = data["valid"]
        valid = valid.sample(n=min(int(cfg["valid_samples"]), len(valid)), random_state=seed).reset_index(
            drop=True
        )
        parent_name, child_name = f"job{job.id}_parent", f"job{job.id}_child"
        loaded = self.rt.loaded
        scorer = Scorer(
            loaded, PromptBuilder(loaded.tokenizer, data["catalog"]), batch_size=self.rt.score_batch_size
        )
        try:
            load_adapter(loaded, Path(parent.artifact_path), parent_name)
            self.beat("unlearn")
            low, high = UNLEARN_SPAN

            def on_progress(_phase: str, done: int, total: int) -> None:
                self.beat(progress=low + (high - low) * done / max(total, 1), force=done >= total)

            report = run_unlearning(
                cfg["method"],
                UnlearningInputs(
                    scorer,
                    parent_name,
                    data["forget"][SAMPLE_COLUMNS],
                    data["retain"][SAMPLE_COLUMNS],
                    valid[SAMPLE_COLUMNS],
                ),
                dict(cfg["method_config"]),
                child_name,
                progress=Progress(on_progress),
            )
            self.beat("verify")
            erasure_repo.set_status(self.session, self.request_ids, "verifying", self.rt.clock())
            self.checkpoint()
            forget_eq, unseen_eq = equal_size(
                data["forget"], data["unseen"], int(cfg["max_verify_samples"]), seed
            )
            result = verify_candidate(
                scorer,
                parent_name,
                child_name,
                forget_eq,
                unseen_eq,
                valid,
                Thresholds(**job.thresholds),
                report.details.get("teacher_divergence"),
            )
            figures = json_safe(
                {
                    **result.metrics,
                    "forget_samples": len(data["forget"]),
                    "retain_samples": len(data["retain"]),
                    "unlearning": report.to_dict(),
                }
            )
            if not result.passed:
                reason = "verification failed: " + "; ".join(result.reasons)
                rejected_id = self.save_rejected(child_name, parent.id, figures, reason)
                self.beat(metrics=figures, verdict="failed", child_version_id=rejected_id)
                return self.fail(reason, count_retry=True)
            self.beat("register", metrics=figures, verdict="passed")
            child_id = self.save_child(child_name, parent.id, figures)
        finally:
            unload_adapter(loaded, child_name)
            unload_adapter(loaded, parent_name)
        self.beat("promote", child_version_id=child_id)
        return None

    def child_config(self) -> dict[str, Any]:
        job = self.job
        return {
            "method": job.config["method"],
            "method_config": job.config["method_config"],
            "job_id": job.id,
        }

    @staticmethod
    def version_metrics(figures: dict[str, Any]) -> dict[str, Any]:
        return {k: figures.get(k) for k in ("child_valid", "child_forget", "forget_samples")}

    def save_rejected(self, child_name: str, parent_id: str, figures: dict[str, Any], reason: str) -> str:
        """Register a child that failed the gates as ``rejected`` (metrics and reason kept, so that admins
        see it in the adapter list) and destroy its weights: they were saved only to name it by content."""
        job = self.job
        tmp = self.rt.adapters_dir / f".job{job.id}-{self.rt.worker_id}.rejected.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        config = self.child_config()
        try:
            sha = save_adapter(
                self.rt.loaded, child_name, tmp, {"kind": "unlearn", "parent": parent_id, **config}
            )
            version_id = sha[:16]
            existing = adapter_repo.get(self.session, version_id)
            if existing is not None and existing.status != "rejected":
                return version_id  # the same weights as a registered version (the parent, unchanged)
            registry.register_version(
                self.session,
                version_id,
                parent_id,
                self.rt.loaded.config.base,
                tmp,
                sha,
                config,
                {**self.version_metrics(figures), "verdict": "failed"},
                adapter_repo.clean_of(self.session, parent_id),  # not shown to be free of this batch
                job.id,
                self.rt.clock(),
            )
        finally:
            registry.delete_artifact(str(tmp))
        registry.reject_version(self.session, version_id, f"job:{job.id}", reason, self.rt.clock())
        return version_id

    def save_child(self, child_name: str, parent_id: str, figures: dict[str, Any]) -> str:
        job = self.job
        tmp = self.rt.adapters_dir / f".job{job.id}-{self.rt.worker_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        config = self.child_config()
        sha = save_adapter(
            self.rt.loaded, child_name, tmp, {"kind": "unlearn", "parent": parent_id, **config}
        )
        version_id = sha[:16]
        folder = self.rt.adapters_dir / version_id
        if folder.exists():
            shutil.rmtree(tmp)
        else:
            tmp.rename(folder)
        clean = adapter_repo.clean_of(self.session, parent_id) | set(self.request_ids)
        registry.register_version(
            self.session,
            version_id,
            parent_id,
            self.rt.loaded.config.base,
            folder,
            sha,
            config,
            self.version_metrics(figures),
            clean,
            job.id,
            self.rt.clock(),
        )
        return version_id

    def promote(self) -> JobOutcome | None:
        job = self.job
        assert job.child_version_id and job.parent_version_id and job.expected_alias_counter is not None
        active = registry.active_adapter(self.session)
        if active is not None and active.version_id == job.child_version_id:
            self.beat("purge")  # promoted before a crash: carry on
            return None
        try:
            active = registry.promote_version(
                self.session,
                job.child_version_id,
                job.parent_version_id,
                job.expected_alias_counter,
                actor=f"job:{job.id}",
                job_id=job.id,
                reason="erasure batch",
                now=self.rt.clock(),
            )
        except StalePromotion as error:
            self.session.rollback()
            self.reject_candidate(job.child_version_id, str(error))
            return self.fail(f"stale promotion refused: {error}", count_retry=False)
        self.beat("purge")
        if self.rt.publisher is not None:
            self.rt.publisher.publish(
                promotion_event(active.version_id, active.counter, job.parent_version_id, "promote")
            )
        return None

    def reject_candidate(self, version_id: str, reason: str) -> None:
        if registry.get_version(self.session, version_id).status == "candidate":
            registry.reject_version(self.session, version_id, f"job:{self.job.id}", reason, self.rt.clock())

    def purge_prepared_files(self, now: datetime) -> dict[str, Any] | None:
        """Rewrite the prepared data folder without the batch's scopes; the record goes on the job's
        metrics (and from there into the certificates).  Skipped when already recorded (a resumed job)."""
        folder = self.rt.prepared_data_dir
        if folder is None or "prepared_data" in self.job.metrics:
            return None
        scopes = [
            ScopeToPurge(
                r.id,
                r.user_id,
                None if r.scope == "user" else tuple(erasure_repo.scope_items(self.session, r.id)),
            )
            for r in self.requests()
            if r.user_id is not None
        ]
        result = purge_prepared(folder, scopes)
        if result is None:
            return {"folder": str(folder), "present": False}
        return {"folder": str(folder), "present": True, **result.to_dict(), "purged_at": now.isoformat()}

    def purge(self) -> None:
        now = self.rt.clock()
        prepared = self.purge_prepared_files(now)
        for request in self.requests():
            if request.rows_deleted is None and request.user_id is not None:
                items = (
                    None if request.scope == "user" else erasure_repo.scope_items(self.session, request.id)
                )
                request.rows_deleted = catalog_repo.delete_scope_rows(self.session, request.user_id, items)
                request.profile_deleted = (
                    catalog_repo.delete_profile(self.session, request.user_id) if items is None else False
                )
        if self.job.verdict != "not_needed":
            for version in registry.versions_carrying(self.session, set(self.request_ids)):
                registry.delete_artifact(version.artifact_path)
                registry.mark_destroyed(
                    self.session, version.id, f"job:{self.job.id}", "carries erased data", now
                )
        self.session.flush()
        if prepared is None:
            self.beat("certify")
        else:
            self.beat("certify", metrics={**self.job.metrics, "prepared_data": prepared})

    def certify(self) -> JobOutcome:
        job, now = self.job, self.rt.clock()
        child = registry.get_version(self.session, job.child_version_id or "")
        parent = registry.get_version(self.session, job.parent_version_id or "")
        for request in self.requests():
            if erasure_repo.certificate(self.session, request.id) is None:
                document = self.certificate(request, parent, child, now)
                erasure_repo.add_certificate(
                    self.session, Certificate(request_id=request.id, document=document, issued_at=now)
                )
            erasure_repo.set_status(
                self.session, [request.id], "completed", now, completed_at=now, user_id=None
            )
            audit_repo.record(
                self.session,
                now,
                f"job:{job.id}",
                "erasure.completed",
                "erasure_request",
                request.id,
                adapter=child.id,
            )
        job_repo.heartbeat(
            self.session,
            job.id,
            self.rt.worker_id,
            now,
            0,
            phase="done",
            progress=1.0,
            status="succeeded",
            finished_at=now,
            lease_owner=None,
        )
        self.checkpoint()
        return JobOutcome(job.id, "succeeded")

    def certificate(self, request: ErasureRequest, parent: Any, child: Any, now: datetime) -> dict[str, Any]:
        job = self.job
        stamp = lambda t: t.isoformat() if t else None  # noqa: E731
        document = {
            "type": "e2u.unlearning-certificate",
            "version": 1,
            "request_id": request.id,
            "subject": {"user_hash": request.user_hash, "hash": "HMAC-SHA256(salt, user_id)"},
            "scope": {
                "kind": request.scope,
                "items": len(erasure_repo.scope_items(self.session, request.id)),
            },
            "erased": {
                "forget_samples": request.forget_samples,
                "rows_deleted": request.rows_deleted,
                "profile_deleted": bool(request.profile_deleted),
                "prepared_data": self.prepared_data_record(request.id),
            },
            "job_id": job.id,
            "parent_adapter": {"id": parent.id, "sha256": parent.sha256},
            "child_adapter": {"id": child.id, "sha256": child.sha256},
            "verification": {"verdict": job.verdict, "metrics": job.metrics, "thresholds": job.thresholds},
            "timestamps": {
                "received_at": stamp(request.created_at),
                "deadline_at": stamp(request.deadline_at),
                "promoted_at": stamp(child.promoted_at),
                "old_weights_destroyed_at": stamp(parent.destroyed_at) if parent.id != child.id else None,
                "prepared_data_purged_at": (job.metrics.get("prepared_data") or {}).get("purged_at"),
                "issued_at": stamp(now),
            },
        }
        return sign_certificate(json_safe(document), self.rt.signing_key)

    def prepared_data_record(self, request_id: str) -> dict[str, Any] | None:
        """The certificate's account of the prepared data files: this request's samples removed from them
        and the files' content hash after the rewrite; None when no folder was purged."""
        record = self.job.metrics.get("prepared_data")
        if not record:
            return None
        if not record.get("present"):
            return {"present": False}
        return {
            "present": True,
            "samples_removed": int(record["samples_removed"].get(request_id, 0)),
            "sha256_before": record["sha256_before"],
            "sha256_after": record["sha256_after"],
        }

    # ------------------------------------------------------------------ failure
    def fail(self, reason: str, count_retry: bool) -> JobOutcome:
        now, job = self.rt.clock(), self.job
        max_retries = int(job.config.get("max_retries", 3))
        fallback = bool(job.config.get("exact_fallback")) and not job.config.get("fallback")
        to_retrain = []
        for request in self.requests():
            retries = request.retry_count + (1 if count_retry else 0)
            if retries > max_retries and fallback:
                erasure_repo.set_status(
                    self.session,
                    [request.id],
                    "queued",
                    now,
                    retry_count=retries,
                    failure_reason=reason,
                )
                to_retrain.append(request.id)
            elif retries > max_retries:
                erasure_repo.set_status(
                    self.session,
                    [request.id],
                    "failed",
                    now,
                    retry_count=retries,
                    failed_at=now,
                    failure_reason=reason,
                )
            else:
                erasure_repo.set_status(
                    self.session,
                    [request.id],
                    "queued",
                    now,
                    retry_count=retries,
                    queued_at=now,
                    failure_reason=reason,
                )
        job_repo.heartbeat(
            self.session,
            job.id,
            self.rt.worker_id,
            now,
            0,
            status="failed",
            finished_at=now,
            failure_reason=reason,
            lease_owner=None,
        )
        audit_repo.record(
            self.session, now, f"job:{job.id}", "job.failed", "unlearning_job", str(job.id), reason=reason
        )
        follow_up = [batching.create_fallback_job(self.session, to_retrain, job, now)] if to_retrain else []
        self.checkpoint()
        return JobOutcome(job.id, "failed", reason, follow_up)


def run_job(
    session: Session, job_id: int, runtime: PipelineRuntime, checkpoint: Callable[[], None]
) -> JobOutcome:
    """Run (or resume) unlearning job ``job_id``; idempotent and safe to deliver twice.

    Takes the job's lease (skips if a live worker holds it or the job is finished), then walks the phases
    from where the job stands.  A failed gate or an error before promotion fails the job with its reason and
    sends the requests back to the queue with ``retry_count + 1`` (``failed`` past ``max_retries``); the
    active version stays.  An error after promotion leaves the job running so that it is taken up again.
    ``checkpoint`` commits the session (the edge's commit).
    """
    job = job_repo.get(session, job_id)
    if job is None or job.status in ("succeeded", "failed"):
        return JobOutcome(job_id, "skipped", "unknown or finished job")
    if not job_repo.try_lease(session, job_id, runtime.worker_id, runtime.clock(), runtime.lease_seconds):
        session.rollback()
        return JobOutcome(job_id, "skipped", "another worker holds the lease")
    if job.started_at is None:
        job.started_at = runtime.clock()
    checkpoint()
    run = _Run(session, job, runtime, checkpoint)
    try:
        if PHASES.index(job.phase) < PHASES.index("register") or job.child_version_id is None:
            outcome = run.unlearn_verify_register()
            if outcome is not None:
                return outcome
    except LeaseLost as error:
        session.rollback()
        return JobOutcome(job_id, "lease_lost", str(error))
    except Exception as error:
        log.exception("job %s failed before promotion", job_id)
        session.rollback()
        session.expire_all()
        return run.fail(f"error in phase {job.phase}: {type(error).__name__}: {error}", count_retry=True)
    try:
        if job.phase in ("register", "promote"):
            outcome = run.promote()
            if outcome is not None:
                return outcome
        if job.phase == "purge":
            run.purge()
        return run.certify()
    except LeaseLost as error:
        session.rollback()
        return JobOutcome(job_id, "lease_lost", str(error))
