"""Erasure intake: idempotency, validation, cancellation, and ratings refused while erasure is pending."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import utcnow
from core.db.repositories import catalog as catalog_repo
from core.ml.data import PreparedData
from core.services import batching, erasures, recommendations
from core.services.batching import JobSettings
from core.services.errors import (
    Conflict,
    Forbidden,
    IdempotencyKeyReused,
    InvalidInput,
    NotCancellable,
    NotFound,
)
from core.services.recommendations import NewRating

INTAKE = erasures.IntakeConfig(salt="test-salt", deadline_days=30)


def test_idempotency_key_returns_the_same_request(session: Session, seeded: PreparedData) -> None:
    first, created = erasures.create_erasure_request(session, "u1", None, INTAKE, idempotency_key="k-1")
    session.commit()
    again, created_again = erasures.create_erasure_request(session, "u1", None, INTAKE, idempotency_key="k-1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyKeyReused, match="used for a different erasure request"):
        erasures.create_erasure_request(session, "u2", None, INTAKE, idempotency_key="k-1")
    assert len(erasures.list_erasure_requests(session)) == 1
    assert first.status == "received" and (first.deadline_at - first.created_at).days == 30
    assert first.user_hash == erasures.user_hash("test-salt", "u1") != erasures.user_hash("other", "u1")


def test_bad_input_changes_nothing(session: Session, seeded: PreparedData) -> None:
    with pytest.raises(NotFound, match="no data stored for user 'nobody'"):
        erasures.create_erasure_request(session, "nobody", None, INTAKE)
    with pytest.raises(InvalidInput, match=r"user 'u1' has no ratings of item\(s\) \['not-rated'\]"):
        erasures.create_erasure_request(session, "u1", ["not-rated"], INTAKE)
    with pytest.raises(InvalidInput, match="items must list at least one item"):
        erasures.create_erasure_request(session, "u1", [], INTAKE)
    assert erasures.list_erasure_requests(session) == []


def test_cancel_only_while_pending(session: Session, seeded: PreparedData) -> None:
    request, _ = erasures.create_erasure_request(session, "u1", None, INTAKE)
    assert erasures.cancel_erasure_request(session, request.id).status == "cancelled"
    assert erasures.cancel_erasure_request(session, request.id).status == "cancelled"  # idempotent
    # the raw user id goes at cancel, as at completion (the salted hash stays: idempotency compares it)
    cancelled = erasures.get_erasure_request(session, request.id)
    assert cancelled.user_id is None and cancelled.user_hash == erasures.user_hash(INTAKE.salt, "u1")
    other, _ = erasures.create_erasure_request(session, "u2", None, INTAKE)
    other.status = "unlearning"
    session.flush()
    with pytest.raises(NotCancellable, match="is unlearning; only a pending request can be cancelled"):
        erasures.cancel_erasure_request(session, other.id)
    with pytest.raises(NotFound, match="has no certificate yet"):
        erasures.get_certificate(session, other.id)


def test_recommend_path_and_new_ratings_respect_pending_erasures(
    session: Session, seeded: PreparedData
) -> None:
    history = recommendations.user_history(session, "u4", 3)
    assert len(history) == 3
    candidates = recommendations.candidate_items(session, "u4", 5)
    assert len(candidates) == 5 and not set(candidates) & set(recommendations.user_history(session, "u4", 99))
    rows = recommendations.add_interactions(session, "u4", [NewRating(candidates[0], 5.0)], history_len=3)
    assert rows[0].split == "new" and rows[0].label == 1 and rows[0].history
    with pytest.raises(Conflict, match=r"user 'u4' already rated item\(s\)"):
        recommendations.add_interactions(session, "u4", [NewRating(candidates[0], 4.0)], history_len=3)
    with pytest.raises(InvalidInput, match=r"unknown item\(s\) \['nope'\]"):
        recommendations.add_interactions(session, "u4", [NewRating("nope", 4.0)], history_len=3)
    erasures.create_erasure_request(session, "u4", None, INTAKE)
    with pytest.raises(NotFound, match="unknown user 'u4'"):
        recommendations.user_history(session, "u4", 3)
    with pytest.raises(Conflict, match=r"user 'u4' has a pending erasure covering item\(s\)"):
        recommendations.add_interactions(session, "u4", [NewRating(candidates[1], 4.0)], history_len=3)
    assert "u4" not in recommendations.prompt_catalog(session).profiles


def test_received_becomes_queued_at_the_batchers_pass(session: Session, seeded: PreparedData) -> None:
    now = utcnow()
    request, _ = erasures.create_erasure_request(session, "u4", None, INTAKE, now=now)
    session.commit()
    assert (request.status, request.queued_at) == ("received", None)
    # excluded from prompts and training from the moment it is received
    assert "u4" not in set(catalog_repo.usable_interactions(session)["user_id"])
    assert batching.form_batches(session, JobSettings(batch_size=2, batch_max_wait_seconds=60), now) == []
    session.commit()
    queued = erasures.get_erasure_request(session, request.id)
    assert queued.status == "queued" and queued.queued_at == now
    assert erasures.cancel_erasure_request(session, request.id).status == "cancelled"


ALICE = erasures.Caller("api_key:1")
BOB = erasures.Caller("api_key:2")
ADMIN = erasures.Caller("api_key:3", admin=True)


def test_a_request_is_seen_and_cancelled_by_its_owner_only(session: Session, seeded: PreparedData) -> None:
    mine, _ = erasures.create_erasure_request(session, "u1", None, INTAKE, caller=ALICE)
    session.commit()
    assert mine.owner == "api_key:1"
    for call in (
        lambda: erasures.get_erasure_request(session, mine.id, BOB),
        lambda: erasures.cancel_erasure_request(session, mine.id, caller=BOB),
        lambda: erasures.get_certificate(session, mine.id, BOB),
    ):  # the same answer as for an id that does not exist: ids reveal nothing
        with pytest.raises(NotFound, match=f"no erasure request '{mine.id}'"):
            call()
    assert erasures.list_erasure_requests(session, caller=BOB) == []
    with pytest.raises(Forbidden, match="takes the admin scope"):
        erasures.list_erasure_requests(session, caller=BOB, everyone=True)
    assert [r.id for r in erasures.list_erasure_requests(session, caller=ALICE)] == [mine.id]
    assert [r.id for r in erasures.list_erasure_requests(session, caller=ADMIN, everyone=True)] == [mine.id]
    assert erasures.get_erasure_request(session, mine.id, ADMIN).id == mine.id
    assert ALICE.shows_user_id(mine) and not ADMIN.shows_user_id(mine) and not BOB.may_see(mine)
    assert erasures.cancel_erasure_request(session, mine.id, caller=ALICE).status == "cancelled"


def test_idempotency_keys_are_per_owner_and_stored_hashed(session: Session, seeded: PreparedData) -> None:
    alices, _ = erasures.create_erasure_request(session, "u1", None, INTAKE, "shared-key", caller=ALICE)
    session.commit()
    # another owner's identical key files its own request and learns nothing of Alice's
    bobs, created = erasures.create_erasure_request(session, "u2", None, INTAKE, "shared-key", caller=BOB)
    assert created and bobs.id != alices.id
    session.commit()
    with pytest.raises(IdempotencyKeyReused) as refused:
        erasures.create_erasure_request(session, "u3", None, INTAKE, "shared-key", caller=BOB)
    assert refused.value.details == {"request_id": bobs.id}  # the caller's own request, never Alice's
    stored = {r.idempotency_key_hash for r in erasures.list_erasure_requests(session, everyone=True)}
    assert stored == {erasures.idempotency_key_hash("test-salt", "shared-key")}
    assert "shared-key" not in str(stored)


def _file_concurrently(sessions: sessionmaker[Session], callers: int) -> list[str]:
    """``callers`` threads, each with its own session, file the same request with one Idempotency-Key."""
    barrier = threading.Barrier(callers)

    def file() -> str:
        with sessions() as own:
            barrier.wait()
            request, _ = erasures.create_erasure_request(own, "u5", None, INTAKE, "burst", caller=ALICE)
            own.commit()
            return request.id

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(lambda _: file(), range(callers)))


def test_concurrent_requests_with_one_key_all_get_the_same_request(
    session_factory: sessionmaker[Session], session: Session, seeded: PreparedData
) -> None:
    ids = _file_concurrently(session_factory, 15)  # raised IntegrityError for most of them before
    assert len(ids) == 15 and len(set(ids)) == 1
    assert [r.id for r in erasures.list_erasure_requests(session, everyone=True)] == ids[:1]
