"""The one reader of interaction data never returns data under a live erasure scope."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.db.repositories import catalog as catalog_repo
from core.ml.data import PreparedData, decode_history
from core.services.erasures import IntakeConfig, cancel_erasure_request, create_erasure_request

INTAKE = IntakeConfig(salt="test-salt")


def test_import_keeps_every_sample_with_its_split(session: Session, seeded: PreparedData) -> None:
    rows = catalog_repo.usable_interactions(session)
    assert len(rows) == len(seeded.samples)
    assert rows["split"].value_counts().to_dict() == seeded.samples["split"].value_counts().to_dict()


def test_whole_user_scope_is_excluded_at_once_and_back_after_cancel(
    session: Session, seeded: PreparedData
) -> None:
    request, _ = create_erasure_request(session, "u3", None, INTAKE)
    session.commit()
    rows = catalog_repo.usable_interactions(session)
    assert "u3" not in set(rows["user_id"])
    assert "u3" not in catalog_repo.profiles(session)
    assert catalog_repo.usable_interactions(session, user_id="u3").empty
    cancel_erasure_request(session, request.id)
    session.commit()
    assert (
        len(catalog_repo.usable_interactions(session, user_id="u3"))
        == (seeded.samples["user_id"] == "u3").sum()
    )


def test_item_scope_leaves_rows_and_histories(session: Session, seeded: PreparedData) -> None:
    own = seeded.samples[seeded.samples["user_id"] == "u1"]
    erased = own.iloc[0]["item_id"]  # the first sampled rating also appears in later histories
    assert any(erased in h for h in own["history"])
    create_erasure_request(session, "u1", [erased], INTAKE)
    session.commit()
    rows = catalog_repo.usable_interactions(session, user_id="u1")
    assert erased not in set(rows["item_id"]) and len(rows) == len(own) - 1
    assert all(item != erased for h in rows["history"] for item, _ in decode_history(h))
    everyone = catalog_repo.usable_interactions(session)
    assert len(everyone) == len(seeded.samples) - 1
    assert erased in catalog_repo.popular_unseen_items(session, "u1", 100)  # the erased rating is not used


def test_scope_rows_are_the_stored_samples(session: Session, seeded: PreparedData) -> None:
    request, _ = create_erasure_request(session, "u2", None, INTAKE)
    session.flush()
    scoped = catalog_repo.scope_interactions(session, [request.id], splits=["train"])
    expected = seeded.samples[(seeded.samples["user_id"] == "u2") & (seeded.samples["split"] == "train")]
    assert sorted(scoped["item_id"]) == sorted(expected["item_id"])
    assert sorted(scoped["history"]) == sorted(expected["history"])


def test_item_scope_takes_in_the_prompts_that_mention_the_item(
    session: Session, seeded: PreparedData
) -> None:
    train = seeded.samples[seeded.samples["split"] == "train"]
    user = sorted(set(train["user_id"]))[0]
    own = train[train["user_id"] == user]
    erased = own.iloc[0]["item_id"]  # the user's first training sample: later prompts mention it
    mentioning = own[[any(i == erased for i, _ in decode_history(h)) for h in own["history"]]]
    assert len(mentioning) > 0 and erased not in set(mentioning["item_id"])
    request, _ = create_erasure_request(session, user, [erased], INTAKE)
    session.flush()
    scoped = catalog_repo.scope_interactions(session, [request.id], splits=["train"])
    assert sorted(scoped["item_id"]) == sorted([erased, *mentioning["item_id"]])
    assert sorted(scoped["history"]) == sorted([own.iloc[0]["history"], *mentioning["history"]])  # as trained
    assert set(scoped["user_id"]) == {user}
