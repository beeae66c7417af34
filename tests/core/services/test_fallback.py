"""The exact fallback (DESIGN "The method", step 6; on by default): when a batch has used up its retries, an
adapter retrained from the base on all data not erased is verified and promoted the same fenced way; when
there is no fallback left, the data is deleted all the same.  Tiny untrained model: behaviour only
(statuses, versions, lineage, certificate), never quality."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import AuditEntry, Interaction, UserProfile, utcnow
from core.ml.data import PreparedData, load_prepared, save_prepared
from core.ml.model import LoadedModel
from core.ml.unlearning.base import METHODS, UnlearningError, UnlearningMethod, register
from core.services import batching, erasures, pipeline, registry
from core.services.certificates import verify_certificate
from core.settings import Settings
from core.suppression import SuppressionLedger
from tests.core.conftest import NudgeConfig
from tests.core.services.test_pipeline import INTAKE, JWKS, runtime, settings

# v1 of the fixtures is LoRA r=2, alpha=4 on the default targets; a short recipe for the tiny model
RECIPE = {"train": {"lora": {"r": 2, "alpha": 4}, "max_steps": 4, "eval_every": 2, "valid_samples": 8}}


class Broken(UnlearningMethod):
    """A stand-in method that always fails, so that a batch uses up its retries."""

    name = "test-broken"
    config_class = NudgeConfig

    def run(self, inputs, config, child_name, on_progress=None, progress_bar=False):  # type: ignore[no-untyped-def]
        raise UnlearningError("this method never converges")


if Broken.name not in METHODS:
    register(Broken)


def _fail_once(
    session: Session, model: LoadedModel, adapters_dir: Path, **overrides: object
) -> pipeline.JobOutcome:
    [job_id] = batching.trigger_batch_now(session, settings(method="test-broken", max_retries=0, **overrides))
    session.commit()
    outcome = pipeline.run_job(session, job_id, runtime(model, adapters_dir), session.commit)
    assert outcome.status == "failed" and "never converges" in (outcome.reason or "")
    return outcome


def _rows(session: Session, user: str) -> int:
    return len(session.scalars(select(Interaction).where(Interaction.user_id == user)).all())


def test_without_fallback_exhausted_requests_end_not_unlearned_with_their_data_deleted(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    request, _ = erasures.create_erasure_request(session, "u4", None, INTAKE)
    assert _rows(session, "u4") > 0
    outcome = _fail_once(session, tiny_model, adapters_dir, exact_fallback=False)
    assert outcome.follow_up_jobs == []
    ended = erasures.get_erasure_request(session, request.id)
    assert (ended.status, ended.user_id, ended.profile_deleted) == ("not_unlearned", None, True)
    assert _rows(session, "u4") == 0 and session.get(UserProfile, "u4") is None


def test_the_exact_fallback_is_on_by_default() -> None:
    assert Settings.model_fields["exact_fallback"].default is True
    assert batching.JobSettings().exact_fallback and batching.JobSettings().job_config(0).falls_back


def test_exhausted_batch_falls_back_to_an_exact_retrain(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    request, _ = erasures.create_erasure_request(session, "u4", None, INTAKE)
    outcome = _fail_once(session, tiny_model, adapters_dir, fallback_method_config=RECIPE)  # default: on
    [fallback_id] = outcome.follow_up_jobs
    waiting = erasures.get_erasure_request(session, request.id)
    assert (waiting.status, waiting.job_id, waiting.retry_count) == ("unlearning", fallback_id, 1)
    job = batching.get_job(session, fallback_id)
    assert job.config["method"] == "retrain" and job.config["fallback"] and job.config["fallback_of_job"]
    assert job.config["method_config"]["train"]["max_steps"] == 4

    done = pipeline.run_job(session, fallback_id, runtime(tiny_model, adapters_dir), session.commit)
    assert done.status == "succeeded", done.reason
    job = batching.get_job(session, fallback_id)
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == job.child_version_id != v1_id and active.counter == 2
    assert registry.lineage(session, active.version_id) == [active.version_id, v1_id]
    assert registry.get_version(session, active.version_id).config["method"] == "retrain"
    assert registry.get_version(session, v1_id).status == "destroyed"
    certificate = verify_certificate(erasures.get_certificate(session, request.id), JWKS)["predicate"]
    assert certificate["child_adapter"]["id"] == active.version_id


def test_a_failed_fallback_does_not_fall_back_again(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    request, _ = erasures.create_erasure_request(session, "u4", None, INTAKE)
    # a retrain recipe of another LoRA shape is refused by the method: the fallback fails, for good
    bad = {"train": {"lora": {"r": 4, "alpha": 8}, "max_steps": 1}}
    outcome = _fail_once(session, tiny_model, adapters_dir, exact_fallback=True, fallback_method_config=bad)
    [fallback_id] = outcome.follow_up_jobs
    again = pipeline.run_job(session, fallback_id, runtime(tiny_model, adapters_dir), session.commit)
    assert again.status == "failed" and again.follow_up_jobs == []
    # refused by the retrain method itself (not "unknown unlearning method 'retrain'")
    assert "retrain recipe's LoRA (r=4, alpha=8" in (again.reason or "")
    # out of every way to unlearn: the data goes all the same, the request says the model kept it
    assert erasures.get_erasure_request(session, request.id).status == "not_unlearned"
    assert _rows(session, "u4") == 0 and session.get(UserProfile, "u4") is None
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == v1_id


def test_a_requeued_not_unlearned_request_completes_by_an_exact_retrain_without_forget_rows(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    request, _ = erasures.create_erasure_request(session, "u4", None, INTAKE)
    _fail_once(session, tiny_model, adapters_dir, exact_fallback=False, fallback_method_config=RECIPE)
    assert erasures.get_erasure_request(session, request.id).status == "not_unlearned"
    assert _rows(session, "u4") == 0  # no forget rows left: only the exact retrain can remove the user
    job_id = erasures.requeue_erasure_request(session, request.id, actor="ops")
    session.commit()
    done = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit)
    assert done.status == "succeeded", done.reason
    request = erasures.get_erasure_request(session, request.id)
    assert request.status == "completed" and request.forget_samples  # what v1 had trained on
    job = batching.get_job(session, job_id)
    # verified on what can be verified: provenance and utility, not forgetting (nothing left to measure)
    assert job.metrics["verdict"] == "retrained" and job.metrics["samples"]["forget"] == 0
    assert "exact retrain without a forget set" in job.metrics["reasons"][0]
    assert set(job.metrics["utility"]["difference"]) == {"value", "low", "high"}
    provenance = job.metrics["provenance"]
    assert provenance["method"] == "retrain" and provenance["training_samples_in_scope"] == 0
    assert provenance["training_samples"] > 0 and provenance["requests_deleted_before_unlearning"] == 1
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == job.child_version_id != v1_id
    assert registry.get_version(session, v1_id).status == "destroyed"
    predicate = verify_certificate(erasures.get_certificate(session, request.id), JWKS)["predicate"]
    assert predicate["verification"]["verdict_class"] == "retrained"
    assert predicate["verification"]["metrics"]["provenance"] == provenance


def test_data_near_its_deadline_is_deleted_even_when_unlearning_never_ran(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path, seeded: PreparedData
) -> None:
    prepared = adapters_dir.parent / "prepared"
    save_prepared(seeded, prepared)
    now = utcnow()
    late, _ = erasures.create_erasure_request(session, "u4", None, INTAKE, now=now - timedelta(days=29.5))
    fresh, _ = erasures.create_erasure_request(session, "u5", None, INTAKE, now=now)
    session.commit()
    trained = _rows(session, "u4")
    # the queue stalled, no worker ran: the beat's deadline pass deletes what is due within the margin
    ledger = SuppressionLedger(adapters_dir.parent / "suppression-ledger.jsonl", INTAKE.salt)  # the job's
    assert pipeline.delete_data_due(session, timedelta(hours=24), ledger, prepared, now=now) == [late.id]
    session.commit()
    assert pipeline.delete_data_due(session, timedelta(hours=24), ledger, prepared, now=now) == []  # once
    [entry] = ledger.read()[0]  # on the ledger: a restored backup deletes it again
    assert (entry.user_hash, entry.item_hashes) == (late.user_hash, None)
    assert "u4" not in set(load_prepared(prepared).samples["user_id"])  # the prepared copy went too
    waiting = erasures.get_erasure_request(session, late.id)
    assert (waiting.status, waiting.user_id) == ("received", "u4")  # still open for unlearning
    assert waiting.rows_deleted == trained and waiting.profile_deleted and waiting.forget_samples
    assert _rows(session, "u4") == 0 and session.get(UserProfile, "u4") is None
    assert _rows(session, "u5") > 0  # not due yet
    audit = session.scalars(select(AuditEntry).where(AuditEntry.subject_id == late.id)).all()
    assert [e.actor for e in audit if e.action == "erasure.data_deleted_at_deadline"] == ["deadline"]

    # the job finds no forget rows for u4: the batch goes to the exact retrain at once (retries untouched)
    [job_id] = batching.trigger_batch_now(session, settings(fallback_method_config=RECIPE))
    session.commit()
    outcome = pipeline.run_job(session, job_id, runtime(tiny_model, adapters_dir), session.commit)
    assert outcome.status == "failed" and "deleted before unlearning; exact retrain" in (outcome.reason or "")
    [retrain_id] = outcome.follow_up_jobs
    assert erasures.get_erasure_request(session, late.id).retry_count == 0
    done = pipeline.run_job(session, retrain_id, runtime(tiny_model, adapters_dir), session.commit)
    assert done.status == "succeeded", done.reason
    for request in (late, fresh):
        assert erasures.get_erasure_request(session, request.id).status == "completed"
    certificate = verify_certificate(erasures.get_certificate(session, late.id), JWKS)["predicate"]
    assert certificate["erased"]["deleted_before_unlearning_at"] is not None
    assert certificate["erased"]["rows_deleted"] == trained
    other = verify_certificate(erasures.get_certificate(session, fresh.id), JWKS)["predicate"]
    assert other["erased"]["deleted_before_unlearning_at"] is None
