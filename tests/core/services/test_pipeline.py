"""The unlearning pipeline end to end on the tiny (random, untrained) model with a stand-in method:
behaviour only (versions, rows, files, certificates, statuses), never quality."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.db.models import AdapterVersion, AuditEntry, ErasureRequest, Interaction, UserProfile, utcnow
from core.ml.evidence import EvidenceConfig
from core.ml.model import LoadedModel, adapter_sha256
from core.ml.unlearning.base import METHODS, UnlearningMethod, register
from core.ml.verification import SCORES_FILE, ScoreCache
from core.services import batching, erasures, pipeline, registry
from core.services.api_keys import authenticate, create_api_key
from core.services.batching import JobSettings
from core.services.certificates import PREDICATE_TYPE, verify_certificate
from core.services.errors import (
    Forbidden,
    NotRequeueable,
    PredatesErasure,
    StalePromotion,
    Unauthorized,
    VersionUnavailable,
)
from core.signing import SignatureError, SigningKey, jwks
from core.suppression import SuppressionLedger
from tests.core.conftest import NudgeConfig

INTAKE = erasures.IntakeConfig(salt="salt")
REAL = EvidenceConfig()  # the verifier's defaults: no test forces a verdict
KEY = SigningKey.generate()
JWKS = jwks(KEY)


def settings(thresholds: EvidenceConfig = REAL, **overrides: object) -> JobSettings:
    values: dict[str, object] = {
        "batch_size": 2,
        "batch_max_wait_seconds": 60,
        "method": "test-nudge",
        "thresholds": thresholds,
        "max_retries": 1,
    }
    return JobSettings(**{**values, **overrides})  # type: ignore[arg-type]


def runtime(
    model: LoadedModel,
    adapters_dir: Path,
    worker: str = "w1",
    prepared_data_dir: Path | None = None,
    **overrides: Any,
) -> pipeline.PipelineRuntime:
    """The tests' pipeline runtime: the test key, a ledger beside the adapter store, a 60 s lease;
    ``overrides``: other ``PipelineRuntime`` fields (e.g. ``serving_switch_timeout_seconds``)."""
    return pipeline.PipelineRuntime(
        model,
        adapters_dir,
        worker,
        KEY,
        SuppressionLedger(adapters_dir.parent / "suppression-ledger.jsonl", INTAKE.salt),
        lease_seconds=60,
        score_batch_size=8,
        prepared_data_dir=prepared_data_dir,
        **overrides,
    )


def erase_and_run(
    session: Session, user: str, model: LoadedModel, adapters_dir: Path
) -> tuple[ErasureRequest, int]:
    """Erase ``user`` through one job run to success; the request and the job's id."""
    request, _ = erasures.create_erasure_request(session, user, None, INTAKE)
    session.commit()
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()
    outcome = pipeline.run_job(session, job_id, runtime(model, adapters_dir), session.commit)
    assert outcome.status == "succeeded", outcome.reason
    return request, job_id


def test_batches_form_on_size_or_wait(session: Session, v1_id: str) -> None:
    now = utcnow()
    erasures.create_erasure_request(session, "u1", None, INTAKE, now=now)
    session.commit()
    assert batching.form_batches(session, settings(), now=now) == []
    assert batching.form_batches(session, settings(), now=now + timedelta(seconds=61)) != []
    session.commit()
    for user in ("u2", "u3", "u4"):
        erasures.create_erasure_request(session, user, None, INTAKE, now=now)
    jobs = batching.form_batches(session, settings(), now=now)  # one full batch of 2, one waiting
    assert len(jobs) == 1 and len(batching.job_request_ids(session, jobs[0])) == 2
    assert len(batching.trigger_batch_now(session, settings(), now=now)) == 1
    job = batching.get_job(session, jobs[0])
    assert job.parent_version_id == v1_id and job.config["method"] == "test-nudge"
    assert job.thresholds == REAL.to_dict()


def test_erasure_to_new_active_version(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    v1_path = Path(registry.get_version(session, v1_id).artifact_path)
    request, job_id = erase_and_run(session, "u5", tiny_model, adapters_dir)
    job = batching.get_job(session, job_id)
    assert (job.phase, job.progress, job.verdict) == ("done", 1.0, "passed")
    assert {"verdict", "reasons", "evidence", "unlearning", "seconds"} <= set(job.metrics)
    # the untrained parent (LoRA near zero) learned nothing: its log-ratios to the base barely move, so
    # even 2 held-out users give a small MDE and the real verifier says so (promoted: no failure reason)
    assert job.metrics["verdict"] == "no_prior_signal", job.metrics["reasons"]
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == job.child_version_id != v1_id and active.counter == 2
    assert not v1_path.exists() and registry.get_version(session, v1_id).status == "destroyed"
    assert Path(active.artifact_path).exists()
    assert session.scalars(select(Interaction).where(Interaction.user_id == "u5")).first() is None
    assert session.get(UserProfile, "u5") is None
    done = erasures.get_erasure_request(session, request.id)
    assert done.status == "completed" and done.user_id is None and done.rows_deleted and done.forget_samples
    envelope = erasures.get_certificate(session, request.id)
    signed = verify_certificate(envelope, JWKS)
    with pytest.raises(SignatureError, match="no signature verifies"):
        verify_certificate(envelope, jwks(SigningKey.generate()))
    certificate = signed["predicate"]
    assert signed["predicateType"] == PREDICATE_TYPE and certificate["request_id"] == request.id
    assert certificate["child_adapter"]["id"] == active.version_id
    # the certificate states the verdict class it rests on, why, and each figure with interval and MDE
    verification = certificate["verification"]
    assert verification["verdict_class"] == "no_prior_signal" == job.metrics["verdict"]
    assert verification["reasons"] == job.metrics["reasons"]
    figures = verification["figures"]
    for memorisation in (figures["parent_memorisation"], figures["child_memorisation"]):
        assert {"value", "low", "high"} == set(memorisation["excess"]) and memorisation["mde"] > 0
        assert 0 <= memorisation["p_value"] <= 1 and memorisation["reference_users"] == 2
    assert figures["forget_change"]["n"] == done.forget_samples and "low" in figures["forget_change"]["mean"]
    assert set(figures["utility_auc"]["difference"]) == {"value", "low", "high"}
    assert (figures["alpha"], figures["power"]) == (0.05, 0.8)
    assert certificate["timestamps"]["old_weights_destroyed_at"] is not None
    parent = registry.get_version(session, v1_id)
    assert signed["subject"] == [
        {"name": f"adapter:{active.version_id}", "digest": {"sha256": active.sha256}},
        {"name": f"adapter:{v1_id}", "digest": {"sha256": parent.sha256}},
    ]
    # a duplicate delivery of the same job does nothing
    assert (
        pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit).status
        == "skipped"
    )
    # rollback to the version that predates the completed erasure is refused
    with pytest.raises(PredatesErasure, match=r"predates 1 completed erasure\(s\)"):
        registry.promote_version(session, v1_id, active.version_id, active.counter, "admin", kind="rollback")


def _stored(session: Session, user: str) -> tuple[int, bool]:
    """(rating rows, profile present) of ``user``."""
    rows = session.scalars(select(Interaction).where(Interaction.user_id == user)).all()
    return len(rows), session.get(UserProfile, user) is not None


def test_failed_gates_keep_the_old_version_and_still_delete_the_data(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    request, _ = erasures.create_erasure_request(session, "u6", None, INTAKE)
    session.commit()
    stored_rows, _ = _stored(session, "u6")
    # a child that learned F further (its gold-label probability raised): the real verifier fails it (no
    # forced threshold). (A child wrecked by noise no longer serves: on this 8-sample utility set its AUC
    # loss is noise, "inconclusive utility", which does not fail a job.)
    strict = settings(method_config={"learn_forget_steps": 20}, exact_fallback=False)
    for attempt in (1, 2):
        [job_id] = batching.trigger_batch_now(session, strict)
        session.commit()
        outcome = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit)
        assert outcome.status == "failed" and "verification failed" in (outcome.reason or "")
        job = batching.get_job(session, job_id)
        assert job.verdict == "failed" and job.metrics["verdict"] == "failed" and job.metrics["evidence"]
        assert job.thresholds == REAL.to_dict()
        state = erasures.get_erasure_request(session, request.id)
        assert state.retry_count == attempt
        # max_retries = 1: queued again with the data kept for the next try, then no try left
        assert state.status == ("queued" if attempt == 1 else "not_unlearned")
        # the child that failed the gates is listed as rejected, with its figures and reason, weights gone
        rejected = registry.get_version(session, job.child_version_id or "")
        assert rejected.status == "rejected" and rejected.parent_id == v1_id and rejected.job_id == job_id
        assert rejected.destroyed_at is not None and not Path(rejected.artifact_path).exists()
        assert (
            rejected.metrics["verdict"] == "failed"
            and "verification failed" in rejected.metrics["rejection_reason"]
        )
        with pytest.raises(VersionUnavailable, match="is rejected; its weights cannot serve"):
            registry.promote_version(session, rejected.id, v1_id, 1, "admin")
        if attempt == 1:
            assert _stored(session, "u6") == (stored_rows, True)
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == v1_id and active.counter == 1
    assert Path(active.artifact_path).exists()
    # a request never ends holding data: unlearning failed for good, the rows and the profile went anyway
    assert _stored(session, "u6") == (0, False)
    state = erasures.get_erasure_request(session, request.id)
    assert state.user_id is None and state.rows_deleted == stored_rows and state.profile_deleted
    assert state.failed_at is not None and "verification failed" in (state.failure_reason or "")
    statuses = sorted(v.status for v in session.scalars(select(AdapterVersion)))
    assert statuses == ["active", "rejected", "rejected"]
    assert [p.name for p in adapters_dir.iterdir()] == ["v1"]  # no weights of rejected children left
    # the operator can send it to an exact retrain; nothing else can be re-queued
    job_id = erasures.requeue_erasure_request(session, request.id, actor="ops")
    retrain = batching.get_job(session, job_id)
    assert retrain.config["method"] == "retrain" and retrain.config["fallback"]
    assert erasures.get_erasure_request(session, request.id).status == "unlearning"
    with pytest.raises(NotRequeueable, match="only a not_unlearned one can be re-queued"):
        erasures.requeue_erasure_request(session, request.id)


class DiskFull(UnlearningMethod):
    """A stand-in method that meets an infrastructure error (a full disk, a database gone)."""

    name = "test-disk-full"
    config_class = NudgeConfig
    error: BaseException = OSError(28, "No space left on device")

    def run(self, inputs, config, child_name, on_progress=None, progress_bar=False):  # type: ignore[no-untyped-def]
        raise DiskFull.error


if DiskFull.name not in METHODS:
    register(DiskFull)


@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
    ],
    ids=["disk-full", "database-gone"],
)
def test_infrastructure_errors_retry_with_backoff_without_spending_the_gate_budget(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path, error: BaseException
) -> None:
    DiskFull.error = error
    request, _ = erasures.create_erasure_request(session, "u3", None, INTAKE)
    [job_id] = batching.trigger_batch_now(session, settings(method="test-disk-full", max_retries=0))
    session.commit()
    first = runtime(tiny_model, adapters_dir)
    first.retry = pipeline.RetryPolicy(max_attempts=2, delay_seconds=10, max_delay_seconds=60)
    started = utcnow()
    outcome = pipeline.run_job(session, job_id, first, session.commit)
    assert (outcome.status, outcome.retry_in_seconds) == ("retry", 10)
    assert outcome.reason == f"infrastructure error in phase unlearn: {type(error).__name__}"
    state = erasures.get_erasure_request(session, request.id)
    assert (state.status, state.retry_count, state.user_id) == ("unlearning", 0, "u3")  # budget untouched
    # the job keeps its lease for the back-off: nobody takes it up before, the beat re-sends it after
    held_until = batching.get_job(session, job_id).lease_expires_at
    assert held_until is not None and timedelta(seconds=10) <= held_until - started < timedelta(seconds=60)
    assert batching.jobs_needing_worker(session, held_until - timedelta(seconds=1)) == []
    assert batching.jobs_needing_worker(session, held_until + timedelta(seconds=1)) == [job_id]
    later = runtime(tiny_model, adapters_dir, "w2")
    later.retry, later.clock = first.retry, lambda: held_until + timedelta(seconds=1)
    other = runtime(tiny_model, adapters_dir, "w3")
    assert pipeline.run_job(session, job_id, other, session.commit).status == "skipped"  # still held
    # the second try meets the error again: out of attempts, it fails like a gate and the data goes
    gave_up = pipeline.run_job(session, job_id, later, session.commit)
    assert gave_up.status == "failed" and "gave up after 2 attempts" in (gave_up.reason or "")
    assert gave_up.follow_up_jobs  # the exact fallback (on by default) takes the batch
    assert erasures.get_erasure_request(session, request.id).retry_count == 1
    assert [pipeline.RetryPolicy(6, 30, 100).delay(n) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]


class Leaky(UnlearningMethod):
    """A stand-in method whose error text carries the user's id and a rating (as a pandas KeyError, or a
    database error with its parameters, would)."""

    name = "test-leaky"
    config_class = NudgeConfig

    def run(self, inputs, config, child_name, on_progress=None, progress_bar=False):  # type: ignore[no-untyped-def]
        user = inputs.forget["user_id"].iloc[0]
        raise KeyError(f"no history for {user}-secret: rated 5.0")


if Leaky.name not in METHODS:
    register(Leaky)


def test_error_texts_reach_no_reason_audit_entry_result_or_log(
    session: Session,
    v1_id: str,
    tiny_model: LoadedModel,
    adapters_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    request, _ = erasures.create_erasure_request(session, "u3", None, INTAKE)
    [job_id] = batching.trigger_batch_now(session, settings(method="test-leaky", max_retries=0))
    session.commit()
    with caplog.at_level(logging.DEBUG):
        outcome = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit)
    # the class and a fixed text, where the error happened in the logs: no user id, no rating
    assert outcome.status == "failed" and outcome.reason == "error in phase unlearn: KeyError"
    assert "KeyError (message withheld)" in caplog.text and "unlearning" in caplog.text
    job = batching.get_job(session, job_id)
    state = erasures.get_erasure_request(session, request.id)
    audit = [json.dumps(e.details) for e in session.scalars(select(AuditEntry))]
    for text in [caplog.text, outcome.reason, job.failure_reason, state.failure_reason, *audit]:
        assert "u3-secret" not in (text or "") and "rated 5.0" not in (text or "")
    assert job.failure_reason == state.failure_reason == outcome.reason


def test_jobs_formed_together_each_start_from_the_active_version(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    for user in ("u2", "u3"):  # (u1 and u8 are held out of training: see the holdout test below)
        erasures.create_erasure_request(session, user, None, INTAKE)
    session.commit()
    first, second = batching.trigger_batch_now(session, settings(batch_size=1))
    session.commit()
    assert batching.get_job(session, second).parent_version_id == v1_id  # as formed
    for job_id in (first, second):
        outcome = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit)
        assert outcome.status == "succeeded", outcome.reason
    # the second job rebased onto the first one's child (v1 was destroyed by the first job's purge)
    assert (
        batching.get_job(session, second).parent_version_id
        == batching.get_job(session, first).child_version_id
    )
    active = registry.active_adapter(session)
    assert active is not None and active.counter == 3
    assert active.version_id == batching.get_job(session, second).child_version_id
    # a version's own figures are computed once: the first job scored v1 and the base model on the
    # held-out sample and on the utility set; the second reused all of its parent's (the utility scores
    # computed as the first job's child, the held-out ones by the warm-up after that job)
    caches = [batching.get_job(session, j).metrics["scores"]["parent_cache"] for j in (first, second)]
    samples = batching.get_job(session, second).metrics["samples"]
    assert caches[0]["reused"] == {"adapter": 0, "base": 0}
    held, valid = samples["reference_samples"], samples["valid"]
    assert caches[1]["reused"] == {"adapter": valid + held, "base": held}
    assert caches[1]["computed"] == {"adapter": 0, "base": 0}


def test_erasure_of_a_user_held_out_of_training_completes_as_never_trained_on(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    assert {r.split for r in session.scalars(select(Interaction).where(Interaction.user_id == "u1"))} == {
        "holdout"
    }
    request, job_id = erase_and_run(session, "u1", tiny_model, adapters_dir)
    job = batching.get_job(session, job_id)
    assert job.metrics["verdict"] == "no_prior_signal" and "never trained on" in job.metrics["reasons"][0]
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == v1_id  # nothing to unlearn: the parent stays
    assert session.scalars(select(Interaction).where(Interaction.user_id == "u1")).first() is None
    certificate = verify_certificate(erasures.get_certificate(session, request.id), JWKS)["predicate"]
    assert certificate["verification"]["verdict_class"] == "no_prior_signal"
    assert "never trained on" in certificate["verification"]["reasons"][0]


def test_lease_held_by_a_live_worker_is_respected(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    erasures.create_erasure_request(session, "u7", None, INTAKE)
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()
    from core.db.repositories import jobs as job_repo

    assert job_repo.try_lease(session, job_id, "dead-worker", utcnow(), 60)
    session.commit()
    assert (
        pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit).status
        == "skipped"
    )
    assert batching.jobs_needing_worker(session) == []
    assert batching.jobs_needing_worker(session, utcnow() + timedelta(seconds=61)) == [job_id]
    later = runtime(tiny_model, adapters_dir, "w2")
    later.clock = lambda: utcnow() + timedelta(seconds=61)
    assert pipeline.run_job(session, job_id, later, session.commit).status == "succeeded"


def test_promotion_is_fenced(session: Session, v1_id: str, adapters_dir: Path) -> None:
    other = adapters_dir / "other"
    shutil.copytree(registry.get_version(session, v1_id).artifact_path, other)  # promotion checks the sha256
    registry.register_version(session, "other", None, "tiny", other, adapter_sha256(other), {}, {}, set())
    with pytest.raises(StalePromotion, match="the active version moved"):
        registry.promote_version(session, "other", v1_id, 7, "admin")  # stale counter
    active = registry.promote_version(session, "other", v1_id, 1, "admin")
    assert active.version_id == "other" and active.counter == 2
    with pytest.raises(StalePromotion, match="is already active"):
        registry.promote_version(session, v1_id, v1_id, 1, "admin", kind="rollback")  # a second, stale caller
    back = registry.promote_version(session, v1_id, "other", 2, "admin", kind="rollback")
    assert back.counter == 3 and [e.kind for e in registry.activation_events(session)] == [
        "rollback",
        "promote",
        "bootstrap",
    ]


def test_api_keys(session: Session) -> None:
    plaintext = create_api_key(session, "ops", ["admin", "recommend"])
    assert authenticate(session, plaintext, "admin").name == "ops"
    with pytest.raises(Forbidden, match="lacks the 'erase' scope"):
        authenticate(session, plaintext, "erase")
    with pytest.raises(Unauthorized, match="unknown or revoked API key"):
        authenticate(session, plaintext + "x")


def test_a_promoted_version_gets_its_verification_scores_before_its_first_job(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    """The warm-up after promotion: the next job's verify step scores no held-out or utility sample of
    its parent (before it scored the parent's held-out sample at the parent's first job)."""
    _, first = erase_and_run(session, "u5", tiny_model, adapters_dir)
    child = registry.get_version(session, batching.get_job(session, first).child_version_id or "")
    cached = ScoreCache(Path(child.artifact_path) / SCORES_FILE)
    samples = batching.get_job(session, first).metrics["samples"]
    assert len(cached.scores["adapter"]) == samples["reference_samples"] + samples["valid"]
    assert len(cached.scores["base"]) == samples["reference_samples"]
    _, second = erase_and_run(session, "u6", tiny_model, adapters_dir)
    job = batching.get_job(session, second)
    assert job.parent_version_id == child.id
    assert job.metrics["scores"]["parent_cache"]["computed"] == {"adapter": 0, "base": 0}
    assert not tiny_model.model.peft_config  # the warm-up freed the adapter it loaded


def test_a_failing_warm_up_leaves_the_job_succeeded(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path, monkeypatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "warm_version_scores", broken)
    _, job_id = erase_and_run(session, "u5", tiny_model, adapters_dir)
    assert batching.get_job(session, job_id).status == "succeeded"
