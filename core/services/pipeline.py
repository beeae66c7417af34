"""The unlearning pipeline of one job: collect -> unlearn -> verify -> register -> promote -> purge ->
certify, resumable and fenced.

Transactions: the edge passes ``checkpoint`` (its session's commit); the pipeline calls it at each phase
boundary and heartbeat so that progress is visible and the lease stays alive, and never holds a
transaction open during model computation.  Resume points: before ``register`` a job starts again from
``collect`` (nothing durable was produced); from ``promote`` on, it continues where it stopped.

Each phase is one function of an ``_Attempt`` below; the model work of unlearn and verify is one call to
``core.ml.unlearning_job.unlearn_and_verify``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from core.db.engine import lock_for_claim
from core.db.models import (
    FINISHED_JOB_STATUSES,
    AdapterVersion,
    Certificate,
    ErasureRequest,
    ErasureStatus,
    JobPhase,
    JobStatus,
    UnlearningJob,
    Verdict,
    VersionStatus,
    utcnow,
)
from core.db.repositories import adapters as adapter_repo
from core.db.repositories import audit as audit_repo
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import erasures as erasure_repo
from core.db.repositories import jobs as job_repo
from core.db.repositories import serving as serving_repo
from core.events import EventPublisher, promotion_event
from core.ml.model import LoadedModel
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.unlearning.base import UnlearningError
from core.ml.unlearning_job import Candidate, JobData, unlearn_and_verify
from core.ml.verification import never_trained_on, warm_version_scores
from core.redaction import error_class, redacted_traceback
from core.services import batching, registry, suppression
from core.services.certificates import certificate_document, sign_certificate
from core.services.errors import Conflict, LeaseLost
from core.services.job_config import JobConfig, stored_evidence_config
from core.services.prepared_data import ScopeToPurge, purge_prepared
from core.signing import SigningKey
from core.suppression import LedgerEntry, SuppressionLedger

log = logging.getLogger(__name__)

PHASES = tuple(JobPhase)
PROGRESS = {
    JobPhase.COLLECT: 0.05,
    JobPhase.UNLEARN: 0.1,
    JobPhase.VERIFY: 0.7,
    JobPhase.REGISTER: 0.8,
    JobPhase.PROMOTE: 0.85,
    JobPhase.PURGE: 0.9,
    JobPhase.CERTIFY: 0.95,
    JobPhase.DONE: 1.0,
}
UNLEARN_SPAN = (0.1, 0.65)
HEARTBEAT_EVERY_SECONDS = 2.0
KEEPALIVE_MAX_SECONDS = 10.0  # the keep-alive thread renews the lease at least this often
# the statuses of a job's requests while it holds them
IN_JOB = frozenset({ErasureStatus.UNLEARNING, ErasureStatus.VERIFYING})
# Fault drills only (tests/drills): with E2U_DRILL_PAUSE=<phase> the worker stops for good at the end of
# that phase, its work flushed but not yet committed, so that a drill can SIGKILL it there.  Never set it
# in a deployment.
DRILL_PAUSE_ENV = "E2U_DRILL_PAUSE"
# Errors of the infrastructure, not of unlearning (the database unreachable, a full disk): the job is tried
# again later without spending the batch's gate budget.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError)
# Errors whose texts this code writes from configurations, names and counts, never from data: a failure
# reason may quote them (every other error is named by its class only: core.redaction).
SELF_DESCRIBED_ERRORS: tuple[type[BaseException], ...] = (UnlearningError,)


@dataclass(frozen=True)
class RetryPolicy:
    """How a job is tried again after an infrastructure error: after ``delay_seconds``, doubling with each
    attempt up to ``max_delay_seconds``; a job not yet promoted gives up after ``max_attempts`` tries (its
    lease counts them) and then fails like a failed gate (a registered child not yet promoted: like a
    promotion conflict).  A promoted job never gives up: its purge and certificates must happen."""

    max_attempts: int = 6
    delay_seconds: float = 30.0
    max_delay_seconds: float = 900.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th try (1-based)."""
        return min(self.delay_seconds * 2 ** max(attempt - 1, 0), self.max_delay_seconds)


@dataclass
class PipelineRuntime:
    """What a worker process brings: the cached base model and where adapters live.

    ``loaded``: the base model (adapters are loaded beside it for a job and freed after);
    ``lease_seconds``: how long a heartbeat keeps the job ours; ``serving_liveness_seconds``: a serving
    process that confirmed what it serves within this window counts as live; after promotion the job waits
    up to ``serving_switch_timeout_seconds`` for every live one to confirm the new version before it
    destroys the old weights (then goes on, naming the missing ones); ``signing_key``: the Ed25519 key that
    signs certificates; ``ledger``: the suppression ledger that every deletion of an erasure's data is
    appended to (``core.services.suppression``); ``prepared_data_dir``: the prepared data folder
    (``core.ml.data.save_prepared`` output) that the purge phase rewrites without the erased scope (None:
    there is none to purge).
    """

    loaded: LoadedModel
    adapters_dir: Path
    worker_id: str
    signing_key: SigningKey
    ledger: SuppressionLedger
    lease_seconds: float = 120.0
    publisher: EventPublisher | None = None
    score_batch_size: int = 16
    clock: Callable[[], datetime] = field(default=utcnow)
    prepared_data_dir: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    serving_liveness_seconds: float = 30.0
    serving_switch_timeout_seconds: float = 60.0

    @property
    def keepalive_seconds(self) -> float:
        """How often the keep-alive thread renews the lease during long model work."""
        return min(self.lease_seconds / 4, KEEPALIVE_MAX_SECONDS)


# skipped: someone else holds the job, or it is finished; lease_lost: taken over while running;
# retry: an infrastructure error, the job keeps its lease until ``retry_in_seconds`` from now
OutcomeStatus = Literal["succeeded", "failed", "skipped", "lease_lost", "retry"]


@dataclass
class JobOutcome:
    job_id: int
    status: OutcomeStatus
    reason: str | None = None
    follow_up_jobs: list[int] = field(default_factory=list)  # the edge enqueues these after its commit
    retry_in_seconds: float | None = None  # with "retry": when the edge sends the job again


class _LeaseKeeper:
    """Renews a job's lease from a thread of its own, with a session of its own, every
    ``runtime.keepalive_seconds`` while long model work runs (unlearning, teacher passes and verification
    report no progress for minutes).  It stops at the first refusal and sets ``lost``: the job's next beat
    raises LeaseLost.  A database error only skips a renewal (the lease runs out if it lasts)."""

    def __init__(self, engine: Engine, job_id: int, runtime: PipelineRuntime):
        self.engine, self.job_id, self.rt = engine, job_id, runtime
        self.lost = threading.Event()
        self._stop = threading.Event()
        # in the job's log context (core.logs): its lines name the job too
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=f"lease-job{job_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.rt.keepalive_seconds + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.rt.keepalive_seconds):
            try:
                with Session(self.engine) as session:
                    ok = job_repo.heartbeat(
                        session, self.job_id, self.rt.worker_id, self.rt.clock(), self.rt.lease_seconds
                    )
                    session.commit()
            except INFRASTRUCTURE_ERRORS:
                log.warning("job %s: a keep-alive renewal failed", self.job_id, exc_info=True)
                continue
            if not ok:
                self.lost.set()
                return


def _scope_items(session: Session, request: ErasureRequest) -> tuple[str, ...] | None:
    """The items of a partial request; None for a whole user."""
    if request.scope == "user":
        return None
    return tuple(erasure_repo.scope_items(session, request.id))


def drill_pause(phase: str) -> None:
    """Block forever when ``E2U_DRILL_PAUSE`` names ``phase`` (see ``DRILL_PAUSE_ENV``)."""
    if os.environ.get(DRILL_PAUSE_ENV) == phase:
        log.warning("drill: paused at the end of phase %s", phase)
        while True:
            time.sleep(3600)


class _Attempt:
    """One attempt at one job: its session, lease and configuration; ``checkpoint`` commits.

    Fencing: every transaction of the attempt ends with a lease-guarded write to the job row (``fence``,
    ``beat`` or ``finish``) before ``checkpoint`` commits it, and request statuses move only by
    compare-and-set under the lease (``move``).  A worker whose lease was taken over (or ran out) gets
    LeaseLost at its next write and its transaction is rolled back: its late writes never land.

    It is also the ``core.ml.unlearning_job.JobProgress`` of the model work: each report renews the lease.
    """

    def __init__(
        self, session: Session, job: UnlearningJob, runtime: PipelineRuntime, checkpoint: Callable[[], None]
    ):
        self.session, self.job, self.rt, self.checkpoint = session, job, runtime, checkpoint
        self.config = JobConfig.from_dict(job.config)
        self.request_ids = job_repo.request_ids(session, job.id)
        self.actor = f"job:{job.id}"
        self.lease = erasure_repo.JobLease(job.id, runtime.worker_id)
        self._last_beat = 0.0
        self._phase_started = time.monotonic()
        # the phase as last committed, kept off the ORM row: after a failed flush the row is expired and
        # reading it needs the database that may be away (``_retry_later``)
        self.committed_phase = str(job.phase)
        self._keeper: _LeaseKeeper | None = None

    def _phase_ended(self) -> None:
        """Record how long this attempt spent in the phase it leaves (``job_phase_timings``: /metrics);
        no transaction of its own, it commits or rolls back with the phase change."""
        now = time.monotonic()
        if self.job.phase != JobPhase.QUEUED:
            seconds = now - self._phase_started
            job_repo.add_phase_timing(self.session, self.job.id, self.job.phase, seconds, self.rt.clock())
        self._phase_started = now

    def _lost(self, what: str) -> LeaseLost:
        return LeaseLost(f"job {self.job.id}: {what}; lease lost to another worker")

    def fence(self, **values: Any) -> None:
        """Renew the lease (setting job columns ``values``) without committing; LeaseLost when the job is
        not ours any more.  On PostgreSQL the job row stays locked until the commit, so nobody takes the job
        over before the writes that follow are committed (SQLite: the write lock does the same)."""
        if self._keeper is not None and self._keeper.lost.is_set():
            raise self._lost("the keep-alive was refused")
        ok = job_repo.heartbeat(
            self.session, self.job.id, self.rt.worker_id, self.rt.clock(), self.rt.lease_seconds, **values
        )
        if not ok:
            raise self._lost("a write was refused")

    def beat(
        self, phase: JobPhase | None = None, progress: float | None = None, force: bool = True, **values: Any
    ) -> None:
        """Renew the lease, setting ``phase`` (and its progress), ``progress`` and job columns ``values``,
        and commit; LeaseLost when another worker holds the job now.  Unless ``force``, at most one beat
        every ``HEARTBEAT_EVERY_SECONDS`` (a lease loss that the keep-alive saw is raised all the same)."""
        if self._keeper is not None and self._keeper.lost.is_set():
            raise self._lost("the keep-alive was refused")
        if not force and time.monotonic() - self._last_beat < HEARTBEAT_EVERY_SECONDS:
            return
        if phase is not None:
            values["phase"] = phase
            values.setdefault("progress", PROGRESS.get(phase, 0.0))
        if progress is not None:
            values["progress"] = progress
        if phase is not None and phase != self.job.phase:
            drill_pause(self.job.phase)
            self._phase_ended()
        self.fence(**values)
        self.checkpoint()
        if phase is not None:
            self.committed_phase = str(phase)
        self._last_beat = time.monotonic()

    def finish(self, status: JobStatus, now: datetime, **values: Any) -> None:
        """End the job with ``status`` and give up its lease (no commit); LeaseLost if it is not ours."""
        self._phase_ended()
        if not job_repo.finish(self.session, self.job.id, self.rt.worker_id, now, status, **values):
            raise self._lost(f"finishing as {status} was refused")

    def move(self, request_ids: Sequence[str], status: ErasureStatus, now: datetime, **values: Any) -> None:
        """Move the job's ``request_ids`` from a status the job holds them in (``IN_JOB``) to ``status``,
        under the lease; LeaseLost when any of them moved on or the lease is gone."""
        moved = erasure_repo.transition(self.session, request_ids, IN_JOB, status, now, self.lease, **values)
        if moved != len(request_ids):
            raise self._lost(f"{len(request_ids) - moved} request(s) are no longer the job's to move")

    @contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Run the block with the lease renewed by a ``_LeaseKeeper`` beside it."""
        engine = self.session.get_bind()
        if not isinstance(engine, Engine):  # a session bound to one connection: no second session
            yield
            return
        self._keeper = _LeaseKeeper(engine, self.job.id, self.rt)
        self._keeper.start()
        try:
            yield
        finally:
            self._keeper.stop()

    def requests(self) -> list[ErasureRequest]:
        return erasure_repo.for_job(self.session, self.request_ids)

    def scope_items(self, request: ErasureRequest) -> tuple[str, ...] | None:
        return _scope_items(self.session, request)

    # ------------------------------------------------------------------ JobProgress
    def unlearning_started(self) -> None:
        self.beat(JobPhase.UNLEARN)

    def unlearning_step(self, done: int, total: int) -> None:
        low, high = UNLEARN_SPAN
        self.beat(progress=low + (high - low) * done / max(total, 1), force=done >= total)

    def verification_started(self) -> None:
        self.move(self.request_ids, ErasureStatus.VERIFYING, self.rt.clock())
        self.beat(JobPhase.VERIFY)


# ---------------------------------------------------------------------- collect .. register


def _rebase(run: _Attempt) -> None:
    """Take the version active now as the parent (DESIGN: parent P is the active version).  A job
    formed beside another, or before it, would otherwise start from a parent that the other job's
    promotion superseded and destroyed.  Safe only before anything durable exists (before register);
    promotion stays fenced on the alias counter recorded here."""
    active = registry.active_adapter(run.session)
    job = run.job
    if active is not None and (job.parent_version_id, job.expected_alias_counter) != (
        active.version_id,
        active.counter,
    ):
        run.beat(parent_version_id=active.version_id, expected_alias_counter=active.counter)


def _collect(run: _Attempt) -> JobData:
    """The batch's training samples (and each request's count of them), the usable rest, the catalog."""
    run.beat(JobPhase.COLLECT)
    session = run.session
    forget = catalog_repo.scope_interactions(session, run.request_ids, splits=["train"])
    for request in run.requests():
        if request.rows_deleted is None:  # else: counted when its data was deleted (what was trained on)
            request.forget_samples = sum(catalog_repo.request_scopes(session, [request.id]).covered(forget))
    data = JobData(
        forget=forget.drop_duplicates("id").reset_index(drop=True),
        retain=catalog_repo.usable_interactions(session, splits=["train"]),
        valid=catalog_repo.usable_interactions(session, splits=["valid"]),
        holdout=catalog_repo.usable_interactions(session, splits=["holdout"]),
        catalog=_prompt_catalog(session),
    )
    run.beat(progress=PROGRESS[JobPhase.UNLEARN])
    return data


def _nothing_to_unlearn(run: _Attempt, parent: AdapterVersion) -> None:
    """The adapters only ever trained on the train split: with no training sample in scope, the parent is
    already free of the batch and stays; the job goes on to purge the rows."""
    adapter_repo.add_clean_of(run.session, parent.id, run.request_ids)
    run.beat(
        JobPhase.PURGE,
        child_version_id=parent.id,
        verdict=Verdict.NOT_NEEDED,
        verdict_class=Verdict.NOT_NEEDED.value,
        metrics=never_trained_on(),
    )


def _remove_leftovers(run: _Attempt) -> None:
    """Delete the folders an earlier attempt of this job left in the store and never registered (a worker
    killed between saving its child and committing the registration): its temporary folder, or the child
    already moved to its version id.  Safe: the lease makes the job ours, and nothing of it is durable yet."""
    store, job_id = run.rt.adapters_dir, run.job.id
    leftovers = list(store.glob(f".job{job_id}-*.tmp"))
    for folder in store.iterdir() if store.is_dir() else ():
        metadata = folder / "e2u.json"
        if (
            metadata.is_file()
            and adapter_repo.get(run.session, folder.name) is None
            and json.loads(metadata.read_text()).get("job_id") == job_id
        ):
            leftovers.append(folder)
    for folder in leftovers:
        log.warning("job %s: removing %s, left unregistered by an earlier attempt", job_id, folder.name)
        registry.delete_artifact(str(folder))


def _deleted_before_unlearning(run: _Attempt) -> list[ErasureRequest]:
    """The batch's requests whose stored data was deleted before any unlearning removed it from the model
    (``delete_data_due`` at the deadline, or ``_fail``) and that had training samples then (or unknown)."""
    return [
        r
        for r in run.requests()
        if r.rows_deleted is not None and (r.forget_samples is None or r.forget_samples > 0)
    ]


def _retrain_provenance(run: _Attempt, data: JobData, deleted: list[ErasureRequest]) -> dict[str, Any]:
    """What an exact retrain is trained from, checked before it runs: a fresh adapter on the base model,
    on the usable training samples, none of which lies in the batch's scopes (requests whose user id is
    redacted had their rows deleted: none are left to find).  UnlearningError if one does."""
    in_scope = sum(catalog_repo.request_scopes(run.session, run.request_ids).covered(data.retain))
    if in_scope:
        raise UnlearningError(f"{in_scope} training sample(s) of the exact retrain lie in the batch's scope")
    return {
        "method": run.config.method,
        "trained_from": "the base model (a fresh adapter, the parent's recipe)",
        "training_samples": len(data.retain),
        "training_samples_in_scope": 0,
        "forget_samples": len(data.forget),
        "requests_deleted_before_unlearning": len(deleted),
    }


def _unlearn_verify_register(run: _Attempt) -> JobOutcome | None:
    """Phases collect..register; an outcome when the job ends here (failed gate, wrong base model)."""
    job, config = run.job, run.config
    _remove_leftovers(run)
    _rebase(run)
    parent = registry.get_version(run.session, job.parent_version_id or "")
    base = run.rt.loaded.config.base
    if parent.base_model != base:
        reason = f"parent {parent.id} is for base model {parent.base_model!r}, this worker has {base!r}"
        return _fail(run, reason, count_retry=True)
    data = _collect(run)
    deleted = _deleted_before_unlearning(run)
    if deleted and not config.fallback:
        # the data went before unlearning (a deadline, or a failed unlearning: ``_fail``): the parent may
        # still carry what no forget set can show any more; only an exact retrain (which needs no forget
        # set) removes it, so the batch goes there at once, without spending its retries
        reason = f"the data in scope of {len(deleted)} request(s) was deleted before unlearning"
        return _fail(run, f"{reason}; exact retrain", count_retry=False, retrain=True)
    if data.forget.empty and not deleted:
        _nothing_to_unlearn(run, parent)
        return None
    made_by = {"method": config.method, "method_config": config.method_config, "job_id": job.id}
    provenance = _retrain_provenance(run, data, deleted) if config.fallback else None
    with run.kept_alive():
        candidate = unlearn_and_verify(
            run.rt.loaded,
            Path(parent.artifact_path),
            data,
            config.unlearning_plan(stored_evidence_config(job.thresholds)),
            run.rt.adapters_dir / f".job{job.id}-{run.rt.worker_id}.tmp",
            {"kind": "unlearn", "parent": parent.id, **made_by},
            progress=run,
            name=f"job{job.id}",
            score_batch_size=run.rt.score_batch_size,
            parent_sha256=parent.sha256,  # a corrupted parent is never unlearned from
        )
    if provenance is not None:
        candidate.figures["provenance"] = provenance
    try:
        return _register_child(run, candidate, parent, made_by)
    finally:  # the temporary folder goes whatever happened (registering moved it away already)
        registry.delete_artifact(str(candidate.folder))


def _register_child(
    run: _Attempt, candidate: Candidate, parent: AdapterVersion, made_by: dict[str, Any]
) -> JobOutcome | None:
    """Register the model work's child (phase register), fenced: a worker that lost the job while it
    computed registers nothing; a parent destroyed meanwhile by another job is a conflict."""
    run.fence()
    if registry.get_version(run.session, parent.id).destroyed_at is not None:
        return _conflict(run, f"parent {parent.id} was destroyed by another job while this one computed")
    rejection = None if candidate.passed else "verification failed: " + "; ".join(candidate.reasons)
    verdict_class = candidate.figures.get("verdict")
    if rejection is None:
        run.beat(
            JobPhase.REGISTER, metrics=candidate.figures, verdict=Verdict.PASSED, verdict_class=verdict_class
        )
        run.fence()  # held until the beat below commits the registration
    child_id = _register(run, candidate, parent, made_by, rejection)
    if rejection is not None:
        run.beat(
            metrics=candidate.figures,
            verdict=Verdict.FAILED,
            verdict_class=verdict_class,
            child_version_id=child_id,
        )
        return _fail(run, rejection, count_retry=True)
    run.beat(JobPhase.PROMOTE, child_version_id=child_id)
    return None


def _register(
    run: _Attempt,
    candidate: Candidate,
    parent: AdapterVersion,
    made_by: dict[str, Any],
    rejection: str | None,
) -> str:
    figures = candidate.figures
    new = registry.NewCandidate(
        folder=candidate.folder,
        sha256=candidate.sha256,
        parent_id=parent.id,
        base_model=run.rt.loaded.config.base,
        config=made_by,
        metrics={k: figures.get(k) for k in ("verdict", "reasons", "forget_samples")},
        job_id=run.job.id,
    )
    return registry.register_candidate(
        run.session, new, run.request_ids, run.rt.adapters_dir, rejection, run.rt.clock()
    )


# ---------------------------------------------------------------------- promote .. certify


def _promote(run: _Attempt) -> JobOutcome | None:
    """Make the child active, fenced on the alias counter the job recorded and on the job's lease; a
    promotion refused because another job moved the alias, completed erasures the child predates, or
    destroyed the child's weights (``_conflict``) rejects the child and re-queues the batch."""
    job = run.job
    assert job.child_version_id and job.parent_version_id and job.expected_alias_counter is not None
    active = registry.active_adapter(run.session)
    if active is not None and active.version_id == job.child_version_id:
        run.beat(JobPhase.PURGE)  # promoted before a crash: carry on
        return None
    try:
        run.fence()
        active = registry.promote_version(
            run.session,
            job.child_version_id,
            job.parent_version_id,
            job.expected_alias_counter,
            actor=run.actor,
            job_id=job.id,
            reason="erasure batch",
            now=run.rt.clock(),
        )
    except Conflict as error:
        run.session.rollback()
        return _conflict(run, f"promotion refused: {error}")
    run.beat(JobPhase.PURGE)
    if run.rt.publisher is not None:
        run.rt.publisher.publish(
            promotion_event(active.version_id, active.counter, job.parent_version_id, "promote")
        )
    return None


def _purge_prepared_files(
    run: _Attempt, requests: list[ErasureRequest], now: datetime
) -> dict[str, Any] | None:
    """Rewrite the prepared data folder without the ``requests``' scopes; the record goes on the job's
    metrics (and from there into the certificates).  Skipped when already recorded (a resumed job)."""
    folder = run.rt.prepared_data_dir
    if folder is None or "prepared_data" in run.job.metrics:
        return None
    scopes = [ScopeToPurge(r.id, r.user_id, run.scope_items(r)) for r in requests if r.user_id is not None]
    result = purge_prepared(folder, scopes)
    if result is None:
        return {"folder": str(folder), "present": False}
    return {"folder": str(folder), "present": True, **result.to_dict(), "purged_at": now.isoformat()}


def _delete_stored_data(
    run: _Attempt, requests: list[ErasureRequest], now: datetime
) -> dict[str, Any] | None:
    """Delete the ``requests``' rows (and whole users' profiles) and their copies in the prepared files;
    returns the prepared files' record (None: none to make)."""
    prepared = _purge_prepared_files(run, requests, now)
    entries = []
    for request in requests:
        entry = _delete_rows(run.session, request, run.rt.ledger, now)
        if entry is not None:
            entries.append(entry)
    # on the ledger before the deletions commit: a restored backup replays them
    suppression.record_deletions(run.session, run.rt.ledger, entries, now)
    run.session.flush()
    return prepared


def _delete_rows(
    session: Session, request: ErasureRequest, ledger: SuppressionLedger, now: datetime
) -> LedgerEntry | None:
    """Delete the request's stored rows (and a whole user's profile, with the user's data key: every other
    copy of the rows becomes unreadable), once; recorded on the request.  Returns the suppression-ledger
    entry the caller records before committing (None: nothing was deleted now)."""
    if request.rows_deleted is not None or request.user_id is None:
        return None
    items = _scope_items(session, request)
    request.rows_deleted = catalog_repo.delete_scope_rows(session, request.user_id, items)
    request.profile_deleted = (
        catalog_repo.delete_profile(session, request.user_id) if items is None else False
    )
    return ledger.entry(request.user_hash, items, now)


DEADLINE_ACTOR = "deadline"
DEADLINE_DELETION = "erasure.data_deleted_at_deadline"  # its audit action


def delete_data_due(
    session: Session,
    margin: timedelta,
    ledger: SuppressionLedger,
    prepared_data_dir: Path | None = None,
    now: datetime | None = None,
) -> list[str]:
    """The deadline guarantee, whatever happens to unlearning (queue stalled, worker down): for every
    open request whose deadline is within ``margin`` of ``now`` and whose data is still stored, delete its
    rows and a whole user's profile (and their copies in the prepared files), count the training samples
    that were in scope first (``forget_samples``), and audit it.  The request stays open: its job finds no
    forget rows and goes to the exact retrain (``_deleted_before_unlearning``), and its certificate says
    when the data went (``certificate_document``'s ``deleted_before_unlearning_at``).  Returns the request
    ids; flushes only (the caller commits).  Call at the start of a transaction."""
    when = now or utcnow()
    lock_for_claim(session)
    due = erasure_repo.open_with_data_due(session, when + margin)
    if not due:
        return []
    for request in due:
        if request.forget_samples is None:
            trained = catalog_repo.scope_interactions(session, [request.id], splits=["train"])
            request.forget_samples = len(trained)
    if prepared_data_dir is not None:
        scopes = [
            ScopeToPurge(r.id, r.user_id, _scope_items(session, r)) for r in due if r.user_id is not None
        ]
        purge_prepared(prepared_data_dir, scopes)
    entries = []
    for request in due:
        entry = _delete_rows(session, request, ledger, when)
        if entry is not None:
            entries.append(entry)
        audit_repo.record(
            session,
            when,
            DEADLINE_ACTOR,
            DEADLINE_DELETION,
            "erasure_request",
            request.id,
            status=request.status,
            deadline_at=request.deadline_at.isoformat(),
            rows_deleted=request.rows_deleted,
            profile_deleted=request.profile_deleted,
        )
    # on the ledger before the deletions commit: a restored backup replays them
    suppression.record_deletions(session, ledger, entries, when)
    session.flush()
    return [r.id for r in due]


SERVING_POLL_SECONDS = 0.2


def _await_serving_switch(run: _Attempt) -> None:
    """Wait until every live serving process confirms that it serves the job's child (bounded by
    ``serving_switch_timeout_seconds``), beating the lease, and keep the account on the job's metrics
    (``serving``, for the certificates): each live process's switch time, the ones missing, and when all
    had switched (None when one is missing).  Skipped when already recorded (a resumed job)."""
    job, rt = run.job, run.rt
    if "serving" in job.metrics:
        return
    version = job.child_version_id or ""
    deadline = time.monotonic() + rt.serving_switch_timeout_seconds
    while True:
        now = rt.clock()
        live = serving_repo.live_processes(run.session, now - timedelta(seconds=rt.serving_liveness_seconds))
        switched = serving_repo.confirmations(run.session, version)
        missing = sorted(p for p in live if p not in switched)
        if not missing or time.monotonic() >= deadline:
            break
        run.checkpoint()  # end the read transaction: the next look sees new confirmations
        run.beat(force=False)
        time.sleep(SERVING_POLL_SECONDS)
    confirmed = {p: switched[p] for p in sorted(live) if p in switched}
    record = {
        "version_id": version,
        "liveness_seconds": rt.serving_liveness_seconds,
        "checked_at": now.isoformat(),
        "confirmed": {p: at.isoformat() for p, at in confirmed.items()},
        "missing": missing,
        "all_switched_at": None if missing or not confirmed else max(confirmed.values()).isoformat(),
    }
    if missing:
        log.warning("job %s: %d serving process(es) did not confirm %s", job.id, len(missing), version)
    run.beat(metrics={**job.metrics, "serving": record})


def _purge(run: _Attempt) -> None:
    """Once every live serving process has switched (or the wait ran out), delete the batch's rows (and
    whole users' profiles), the prepared files' copies, and the weights of every version that may carry
    the batch's data."""
    _await_serving_switch(run)
    session, now = run.session, run.rt.clock()
    run.fence()  # files go next: only while the job is ours
    prepared = _delete_stored_data(run, run.requests(), now)
    if run.job.verdict != Verdict.NOT_NEEDED:
        for version in registry.versions_carrying(session, set(run.request_ids)):
            registry.delete_artifact(version.artifact_path)
            registry.mark_destroyed(session, version.id, run.actor, "carries erased data", now)
    session.flush()
    if prepared is None:
        run.beat(JobPhase.CERTIFY)
    else:
        run.beat(JobPhase.CERTIFY, metrics={**run.job.metrics, "prepared_data": prepared})


def _deleted_at_deadline(session: Session, request_id: str) -> datetime | None:
    """When ``delete_data_due`` deleted the request's data (its audit entry), None if it did not."""
    entries = audit_repo.entries(session, subject_id=request_id)
    return next((e.at for e in entries if e.action == DEADLINE_DELETION), None)


def _certify(run: _Attempt) -> JobOutcome:
    """Sign a certificate per request, complete the requests (user id redacted), finish the job."""
    session, job, now = run.session, run.job, run.rt.clock()
    child = registry.get_version(session, job.child_version_id or "")
    parent = registry.get_version(session, job.parent_version_id or "")
    for request in run.requests():
        if erasure_repo.certificate(session, request.id) is None:
            items = len(erasure_repo.scope_items(session, request.id))
            document = certificate_document(
                request,
                items,
                job,
                parent,
                child,
                now,
                serving=job.metrics.get("serving"),
                deleted_before_unlearning_at=_deleted_at_deadline(session, request.id),
            )
            signed = sign_certificate(document, parent, child, run.rt.signing_key)
            erasure_repo.add_certificate(
                session, Certificate(request_id=request.id, document=signed, issued_at=now)
            )
        run.move([request.id], ErasureStatus.COMPLETED, now, completed_at=now, user_id=None)
        audit_repo.record(
            session, now, run.actor, "erasure.completed", "erasure_request", request.id, adapter=child.id
        )
    run.finish(JobStatus.SUCCEEDED, now, phase=JobPhase.DONE, progress=1.0)
    drill_pause(JobPhase.CERTIFY)
    run.checkpoint()
    return JobOutcome(job.id, "succeeded")


# ---------------------------------------------------------------------- failure


def _conflict(run: _Attempt, reason: str) -> JobOutcome:
    """Another job got there first (moved the alias, completed erasures the child predates, destroyed the
    parent or the child): reject the child if it is still a candidate and fail the job, re-queueing its
    requests without spending their gate budget; ``max_attempts`` bounds how often that happens."""
    run.fence()
    child_id = run.job.child_version_id
    if child_id is not None and registry.get_version(run.session, child_id).status == VersionStatus.CANDIDATE:
        registry.reject_version(run.session, child_id, run.actor, reason, run.rt.clock())
    return _fail(run, reason, count_retry=False)


def _fail(run: _Attempt, reason: str, count_retry: bool, retrain: bool = False) -> JobOutcome:
    """Fail the job for ``reason``: each request goes back to the queue (its retry counted if
    ``count_retry``), or once past ``max_retries`` or ``max_attempts`` (jobs it went through), or at once
    with ``retrain``, is held for an exact-fallback job, or, when there is none to go to, has its data
    deleted all the same and ends ``not_unlearned``.  LeaseLost, with nothing written, when the job is not
    ours any more."""
    session, job, config, now = run.session, run.job, run.config, run.rt.clock()
    run.fence()  # before anything, files included
    attempts = job_repo.jobs_per_request(session, run.request_ids)
    to_retrain, to_close = [], []
    for request in run.requests():
        retries = request.retry_count + (1 if count_retry else 0)
        values: dict[str, Any] = {"retry_count": retries, "failure_reason": reason}
        within_budget = retries <= config.max_retries and attempts.get(request.id, 0) < config.max_attempts
        if within_budget and not retrain:
            run.move([request.id], ErasureStatus.QUEUED, now, queued_at=now, **values)
        elif config.falls_back:  # the fallback job below claims it at once
            run.move([request.id], ErasureStatus.QUEUED, now, **values)
            to_retrain.append(request.id)
        else:
            request.retry_count, request.failure_reason = retries, reason
            to_close.append(request)
    metrics = dict(job.metrics)
    if to_close:  # a request never ends holding data
        prepared = _delete_stored_data(run, to_close, now)
        if prepared is not None:
            metrics["prepared_data"] = prepared
        for request in to_close:
            run.move([request.id], ErasureStatus.NOT_UNLEARNED, now, failed_at=now, user_id=None)
            audit_repo.record(
                session,
                now,
                run.actor,
                "erasure.not_unlearned",
                "erasure_request",
                request.id,
                rows_deleted=request.rows_deleted,
                profile_deleted=request.profile_deleted,
            )
    run.finish(JobStatus.FAILED, now, failure_reason=reason, metrics=metrics)
    audit_repo.record(session, now, run.actor, "job.failed", "unlearning_job", str(job.id), reason=reason)
    follow_up = [batching.create_fallback_job(session, to_retrain, job, now)] if to_retrain else []
    run.checkpoint()
    return JobOutcome(job.id, "failed", reason, follow_up)


def run_job(
    session: Session, job_id: int, runtime: PipelineRuntime, checkpoint: Callable[[], None]
) -> JobOutcome:
    """Run (or resume) unlearning job ``job_id``; idempotent and safe to deliver twice.

    Takes the job's lease (skips if a live worker holds it or the job is finished), then walks the phases
    from where the job stands.  A failed gate or an error before promotion fails the job with its reason and
    sends the requests back to the queue with ``retry_count + 1`` (``failed`` past ``max_retries``); the
    active version stays.  A promotion conflict with another job rejects the child and re-queues the
    requests (at most ``max_attempts`` jobs per request).  An error after promotion leaves the job running
    so that it is taken up again.  A worker that lost the lease (taken over, or run out) stops at its next
    write with ``lease_lost`` and nothing of that transaction committed.  ``checkpoint`` commits the
    session (the edge's commit).
    """
    job = job_repo.get(session, job_id)
    if job is None or job.status in FINISHED_JOB_STATUSES:
        return JobOutcome(job_id, "skipped", "unknown or finished job")
    if not job_repo.try_lease(session, job_id, runtime.worker_id, runtime.clock(), runtime.lease_seconds):
        session.rollback()
        return JobOutcome(job_id, "skipped", "another worker holds the lease")
    if job.started_at is None:
        job.started_at = runtime.clock()
    checkpoint()
    run = _Attempt(session, job, runtime, checkpoint)
    try:
        return _walk(run)
    except LeaseLost as error:
        session.rollback()
        log.warning("job %s: %s", job_id, error)
        return JobOutcome(job_id, "lease_lost", str(error))


def _walk(run: _Attempt) -> JobOutcome:
    """The phases from where the job stands (``run_job``); LeaseLost propagates."""
    session, job, job_id = run.session, run.job, run.job.id
    try:
        if (
            PHASES.index(JobPhase(job.phase)) < PHASES.index(JobPhase.REGISTER)
            or job.child_version_id is None
        ):
            outcome = _unlearn_verify_register(run)
            if outcome is not None:
                return outcome
    except LeaseLost:
        raise
    except INFRASTRUCTURE_ERRORS as error:
        return _retry_later(run, error, may_give_up=True)
    except Exception as error:
        # the class only: an exception's text can carry user ids and ratings (core.redaction), and this
        # reason reaches the job, the requests, the audit log and the result backend
        log.error("job %s failed before promotion\n%s", job_id, redacted_traceback(error))
        session.rollback()
        session.expire_all()
        said = f": {error}" if isinstance(error, SELF_DESCRIBED_ERRORS) else ""
        return _fail(run, f"error in phase {job.phase}: {error_class(error)}{said}", count_retry=True)
    try:
        if job.phase in (JobPhase.REGISTER, JobPhase.PROMOTE):
            outcome = _promote(run)
            if outcome is not None:
                return outcome
        if job.phase == JobPhase.PURGE:
            _purge(run)
        outcome = _certify(run)
    except INFRASTRUCTURE_ERRORS as error:
        # not promoted yet (e.g. the child's weights unreadable): capped like a conflict; promoted: the
        # purge and the certificates must happen, so it never gives up
        return _retry_later(run, error, may_give_up=job.phase in (JobPhase.REGISTER, JobPhase.PROMOTE))
    _warm_up(run)
    return outcome


def _prompt_catalog(session: Session) -> Catalog:
    """Titles and every profile (erased users' too: their samples may still be in a job's forget set)."""
    return Catalog(catalog_repo.titles(session), catalog_repo.profiles(session, usable_only=False))


def _warm_up(run: _Attempt) -> None:
    """After the job succeeded, off its requests' path: compute the new active version's own verification
    figures (``core.ml.verification.warm_version_scores``) so that its first job as a parent does not pay
    for them in its verify step.  Only a cache: any error is logged, and that job computes them instead."""
    job_id, child_id = run.job.id, run.job.child_version_id
    if child_id is None or child_id == run.job.parent_version_id:
        return
    try:
        folder = Path(registry.get_version(run.session, child_id).artifact_path)
        holdout = catalog_repo.usable_interactions(run.session, splits=["holdout"])
        valid = catalog_repo.usable_interactions(run.session, splits=["valid"])
        catalog = _prompt_catalog(run.session)
        run.session.rollback()  # reads only: no transaction stays open while the model scores
        scorer = Scorer(
            run.rt.loaded,
            PromptBuilder(run.rt.loaded.tokenizer, catalog, run.rt.loaded.prompt),
            run.rt.score_batch_size,
        )
        sizes = run.config.verification_sizes()
        counts = warm_version_scores(scorer, folder, holdout, valid, sizes)
        log.info("job %s: version %s's verification scores warmed: %s", job_id, child_id, counts)
    except Exception as error:  # a cache warm-up never changes a finished job's outcome
        run.session.rollback()
        log.warning(
            "job %s: warming version %s's scores failed\n%s", job_id, child_id, redacted_traceback(error)
        )


def _retry_later(run: _Attempt, error: BaseException, may_give_up: bool) -> JobOutcome:
    """After an infrastructure error: keep the lease for the policy's delay (so that no worker, nor the
    beat, takes the job up before), without spending the gate budget; past the policy's attempts, a job
    that ``may_give_up`` and is not promoted fails like a failed gate (with a registered child: like a
    promotion conflict, the child rejected and the batch re-queued).  The reason names the error's class
    only: its text can carry SQL parameters or paths."""
    session, job, policy = run.session, run.job, run.rt.retry
    # not read off the job row: a failed flush or the rollback expires it, and reading it then would need
    # the database that is away
    job_id, phase = run.lease.job_id, run.committed_phase
    log.warning("job %s: infrastructure error in phase %s\n%s", job_id, phase, redacted_traceback(error))
    session.rollback()
    reason = f"infrastructure error in phase {phase}: {error_class(error)}"
    try:
        session.refresh(job)
        promoted = PHASES.index(JobPhase(job.phase)) >= PHASES.index(JobPhase.PURGE)
        if may_give_up and not promoted and job.attempts >= policy.max_attempts:
            gave_up = f"{reason} (gave up after {job.attempts} attempts)"
            if job.child_version_id is not None:  # a registered child that cannot be promoted: a conflict
                return _conflict(run, gave_up)
            return _fail(run, gave_up, count_retry=True)
        delay = policy.delay(job.attempts)
        if not job_repo.heartbeat(
            session, job_id, run.rt.worker_id, run.rt.clock(), delay, failure_reason=reason
        ):
            raise LeaseLost(f"job {job_id}: recording the retry was refused; lease lost to another worker")
        run.checkpoint()
    except INFRASTRUCTURE_ERRORS:  # still down: the lease runs out on its own and the beat re-sends
        session.rollback()
        log.warning("job %s: could not record the retry; the lease will expire", job_id)
        delay = run.rt.lease_seconds
    return JobOutcome(job_id, "retry", reason, retry_in_seconds=delay)
