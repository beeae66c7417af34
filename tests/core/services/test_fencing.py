"""Fencing of job and request state (issue 8 "Status writes are not fenced", issue 10 "a slow worker's late
writes are refused"): a worker whose lease was taken over cannot write, a keep-alive holds a job longer
than its lease, and promotion conflicts end in a rejection and a re-queue, at most ``max_attempts`` times.

Worker B runs inside worker A's job (in the model work, or in A's commit) on its own session, with a clock
past A's lease: the takeover of a slow worker, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import AuditEntry, utcnow
from core.db.repositories import jobs as job_repo
from core.ml.model import LoadedModel, adapter_sha256
from core.ml.unlearning.base import METHODS, register
from core.services import batching, erasures, pipeline, registry
from core.services.errors import NotCancellable
from tests.core.conftest import Nudge
from tests.core.services.test_pipeline import INTAKE, runtime, settings

Hook = Callable[[], None]


class Paused(Nudge):
    """The stand-in method with a hook that runs once inside the model work (a long pause); ``broken``:
    the work then fails (an error in the model code)."""

    name = "test-paused"
    hook: Hook | None = None
    broken = False

    def run(self, inputs, config, child_name, on_progress=None, progress_bar=False):  # type: ignore[no-untyped-def]
        hook, Paused.hook = Paused.hook, None
        if hook is not None:
            hook()
            if Paused.broken:
                raise RuntimeError("the model work broke after a long pause")
        return super().run(inputs, config, child_name, on_progress, progress_bar)


if Paused.name not in METHODS:
    register(Paused)


@pytest.fixture(autouse=True)
def _reset_paused() -> None:
    Paused.hook, Paused.broken = None, False


def take_over(
    factory: sessionmaker[Session], job_id: int, model: LoadedModel, adapters_dir: Path
) -> pipeline.JobOutcome:
    """Worker w2 runs ``job_id`` with a clock past w1's lease (60 s): w1 is alive but counted dead."""
    late = runtime(model, adapters_dir, "w2")
    late.clock = lambda: utcnow() + timedelta(seconds=61)
    with factory() as other:
        return pipeline.run_job(other, job_id, late, other.commit)


@dataclass(frozen=True)
class World:
    """A migrated, seeded database with v1 active, a session on it and a factory of more, the model."""

    factory: sessionmaker[Session]
    session: Session
    v1_id: str
    model: LoadedModel
    adapters_dir: Path

    def job_for(self, user: str, **overrides: object) -> tuple[str, int]:
        """A request to erase ``user`` and the job formed for it (committed)."""
        request, _ = erasures.create_erasure_request(self.session, user, None, INTAKE)
        [job_id] = batching.trigger_batch_now(self.session, settings(**overrides))
        self.session.commit()
        return request.id, job_id


@pytest.fixture
def world(
    session_factory: sessionmaker[Session],
    session: Session,
    v1_id: str,
    tiny_model: LoadedModel,
    adapters_dir: Path,
) -> World:
    return World(session_factory, session, v1_id, tiny_model, adapters_dir)


def completions(session: Session, request_id: str) -> int:
    query = select(func.count()).where(
        AuditEntry.action == "erasure.completed", AuditEntry.subject_id == request_id
    )
    return int(session.scalar(query) or 0)


def test_a_slow_worker_whose_lease_was_taken_over_cannot_fail_the_job(world: World) -> None:
    session, session_factory = world.session, world.factory
    tiny_model, adapters_dir = world.model, world.adapters_dir
    request_id, job_id = world.job_for("u2", method="test-paused")
    second_model, taken = copy.deepcopy(tiny_model), []
    # w1 pauses in the model work; w2 takes the job over and completes it; then w1's work fails
    Paused.hook = lambda: taken.append(take_over(session_factory, job_id, second_model, adapters_dir))
    Paused.broken = True
    slow = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir, "w1"), session.commit)
    assert taken[0].status == "succeeded", taken[0].reason
    # w1's late fail is refused: it would have re-queued the completed request and failed the job
    assert slow.status == "lease_lost" and not slow.follow_up_jobs
    session.expire_all()
    job = batching.get_job(session, job_id)
    assert (job.status, job.failure_reason, job.lease_owner) == ("succeeded", None, None)
    done = erasures.get_erasure_request(session, request_id)
    assert (done.status, done.retry_count, done.failure_reason) == ("completed", 0, None)
    assert completions(session, request_id) == 1
    promotions = [e for e in registry.activation_events(session) if e.kind == "promote"]
    assert [e.version_id for e in promotions] == [job.child_version_id]  # promoted once
    assert sorted(p.name for p in adapters_dir.iterdir()) == [job.child_version_id]  # no folder left over


def test_a_slow_worker_whose_lease_was_taken_over_cannot_certify(world: World) -> None:
    session, session_factory = world.session, world.factory
    tiny_model, adapters_dir = world.model, world.adapters_dir
    request_id, job_id = world.job_for("u2")
    second_model, taken = copy.deepcopy(tiny_model), []

    def commit_then_stall() -> None:
        """w1 commits the purge, then stalls past its lease; w2 takes over and certifies."""
        session.commit()
        if batching.get_job(session, job_id).phase == "certify" and not taken:
            taken.append(take_over(session_factory, job_id, second_model, adapters_dir))

    slow = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir, "w1"), commit_then_stall)
    assert taken[0].status == "succeeded", taken[0].reason
    # w1's late certification is refused: no second completion, the job is w2's success
    assert slow.status == "lease_lost"
    session.expire_all()
    assert completions(session, request_id) == 1
    assert erasures.get_erasure_request(session, request_id).status == "completed"
    assert [e.kind for e in registry.activation_events(session)] == ["promote", "bootstrap"]


def test_the_keep_alive_holds_a_job_longer_than_its_lease(world: World) -> None:
    session, session_factory = world.session, world.factory
    _, job_id = world.job_for("u2", method="test-paused")
    worker = runtime(world.model, world.adapters_dir, "w1")
    worker.lease_seconds = 4.0  # renewed every second beside the model work
    seen = []

    def long_step() -> None:
        """Model work that reports no progress for twice the lease; another worker then tries."""
        with session_factory() as other:
            before = batching.get_job(other, job_id).heartbeat_at
            time.sleep(2 * worker.lease_seconds)
            other.expire_all()
            after = batching.get_job(other, job_id).heartbeat_at
            seen.append((before, after, job_repo.try_lease(other, job_id, "w2", utcnow(), 60)))
            other.rollback()

    Paused.hook = long_step
    outcome = pipeline.run_job(session, job_id, worker, session.commit)
    before, after, taken_over = seen[0]
    assert not taken_over and before is not None and after is not None and after > before
    assert outcome.status == "succeeded", outcome.reason


def test_a_purge_by_another_job_rejects_and_requeues_then_the_next_job_succeeds(world: World) -> None:
    session, session_factory = world.session, world.factory
    tiny_model, adapters_dir = world.model, world.adapters_dir
    jobs = []
    for user, seed in (("u2", 1), ("u3", 2)):  # (the stand-in's children differ by their seed only)
        erasures.create_erasure_request(session, user, None, INTAKE)
        jobs += batching.trigger_batch_now(session, settings(method_config={"seed": seed}))
    session.commit()
    first, second = jobs
    [u2_request] = batching.job_request_ids(session, first)
    others = []

    def commit_then_let_the_other_job_finish() -> None:
        """When the first job is about to promote, the second runs to completion: it promotes its child,
        destroys v1 and every version carrying its data (the first job's child too)."""
        session.commit()
        if batching.get_job(session, first).phase == "promote" and not others:
            with session_factory() as other:
                others.append(
                    pipeline.run_job(other, second, runtime(tiny_model, adapters_dir, "w2"), other.commit)
                )

    outcome = pipeline.run_job(
        session, first, runtime(tiny_model, adapters_dir), commit_then_let_the_other_job_finish
    )
    assert others[0].status == "succeeded", others[0].reason
    assert outcome.status == "failed" and "promotion refused" in (outcome.reason or "")
    session.expire_all()
    request = erasures.get_erasure_request(session, u2_request)
    assert (request.status, request.retry_count) == ("queued", 0)  # the gate budget is untouched
    child = registry.get_version(session, batching.get_job(session, first).child_version_id or "")
    assert child.status == "destroyed" and not Path(child.artifact_path).exists()
    # the batch goes again, from the version now active, and completes
    [again] = batching.trigger_batch_now(session, settings())
    session.commit()
    retried = pipeline.run_job(session, again, runtime(tiny_model, adapters_dir), session.commit)
    assert retried.status == "succeeded", retried.reason
    assert (
        batching.get_job(session, again).parent_version_id
        == batching.get_job(session, second).child_version_id
    )


def test_promotion_conflicts_stop_at_the_attempt_cap(world: World) -> None:
    session, session_factory, v1_id = world.session, world.factory, world.v1_id
    tiny_model, adapters_dir = world.model, world.adapters_dir
    other_dir = adapters_dir / "other"
    shutil.copytree(registry.get_version(session, v1_id).artifact_path, other_dir)  # promotion checks sha256
    registry.register_version(
        session, "other", None, "tiny", other_dir, adapter_sha256(other_dir), {}, {}, set()
    )
    request, _ = erasures.create_erasure_request(session, "u2", None, INTAKE)
    session.commit()
    capped = settings(max_attempts=2)
    outcomes = []
    for attempt in (1, 2):  # (a seed per attempt: the stand-in's children would be the same otherwise)
        [job_id] = batching.trigger_batch_now(
            session, settings(max_attempts=2, method_config={"seed": attempt})
        )
        session.commit()
        moved: list[int] = []

        def commit_then_move_the_alias(job_id: int = job_id, moved: list[int] = moved) -> None:
            """An operator promotes and rolls back just before the job promotes: the alias moved."""
            session.commit()
            if batching.get_job(session, job_id).phase == "promote" and not moved:
                with session_factory() as admin:
                    active = registry.active_adapter(admin)
                    assert active is not None
                    registry.promote_version(admin, "other", v1_id, active.counter, "admin")
                    registry.promote_version(admin, v1_id, "other", active.counter + 1, "admin", "rollback")
                    admin.commit()
                    moved.append(job_id)

        outcome = pipeline.run_job(
            session, job_id, runtime(tiny_model, adapters_dir), commit_then_move_the_alias
        )
        outcomes.append(outcome)
        assert outcome.status == "failed" and "the active version moved" in (outcome.reason or "")
        job = batching.get_job(session, job_id)
        assert registry.get_version(session, job.child_version_id or "").status == "rejected"
        state = erasures.get_erasure_request(session, request.id)
        assert state.retry_count == 0  # conflicts never spend the gate budget
        if attempt == 1:  # re-queued for another job
            assert state.status == "queued" and not outcome.follow_up_jobs
    # the second conflict reaches max_attempts: no third ordinary job, the exact fallback takes the batch
    [fallback] = outcomes[-1].follow_up_jobs
    state = erasures.get_erasure_request(session, request.id)
    assert (state.status, state.job_id) == ("unlearning", fallback)
    assert batching.get_job(session, fallback).config["fallback"]
    assert batching.trigger_batch_now(session, capped) == []
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == v1_id


def test_cancel_of_a_request_a_batch_claimed_meanwhile_is_refused(
    session_factory: sessionmaker[Session], session: Session, v1_id: str
) -> None:
    request, _ = erasures.create_erasure_request(session, "u2", None, INTAKE)
    session.commit()
    assert erasures.get_erasure_request(session, request.id).status == "received"  # read before the claim
    with session_factory() as batcher:
        [job_id] = batching.trigger_batch_now(batcher, settings())
        batcher.commit()
    with pytest.raises(NotCancellable, match="is unlearning"):
        erasures.cancel_erasure_request(session, request.id)
    session.rollback()
    state = erasures.get_erasure_request(session, request.id)
    assert (state.status, state.job_id, state.cancelled_at) == ("unlearning", job_id, None)


def test_a_child_unreadable_before_promotion_is_rejected_after_the_retry_cap(world: World) -> None:
    """Between registration and promotion the child's weights become unreadable (an OSError, not a hash
    mismatch): the job retries like any infrastructure error, but it is not promoted yet, so it gives up
    after the policy's attempts, rejects the child and re-queues the batch, instead of retrying for ever."""
    session, tiny_model, adapters_dir = world.session, world.model, world.adapters_dir
    request_id, job_id = world.job_for("u2")

    def commit_then_break_the_child() -> None:
        session.commit()
        job = batching.get_job(session, job_id)
        if job.phase == "promote" and job.child_version_id:
            weights = Path(registry.get_version(session, job.child_version_id).artifact_path)
            weights /= "adapter_model.safetensors"
            if weights.is_file():  # a folder where the file was: reading it raises IsADirectoryError
                weights.unlink()
                weights.mkdir()

    policy = pipeline.RetryPolicy(max_attempts=2, delay_seconds=1, max_delay_seconds=1)
    worker = runtime(tiny_model, adapters_dir, "w1")
    worker.retry = policy
    first = pipeline.run_job(session, job_id, worker, commit_then_break_the_child)
    assert first.status == "retry" and "phase promote: IsADirectoryError" in (first.reason or ""), first
    later = runtime(tiny_model, adapters_dir, "w2")
    later.retry, later.clock = policy, lambda: utcnow() + timedelta(seconds=5)
    gave_up = pipeline.run_job(session, job_id, later, session.commit)
    assert gave_up.status == "failed" and "gave up after 2 attempts" in (gave_up.reason or ""), gave_up
    session.expire_all()
    job = batching.get_job(session, job_id)
    assert registry.get_version(session, job.child_version_id or "").status == "rejected"
    state = erasures.get_erasure_request(session, request_id)
    assert (state.status, state.retry_count) == ("queued", 0)  # a conflict: the gate budget is untouched
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == world.v1_id
