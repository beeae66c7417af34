"""Erased data leaves the prepared data folder on disk too (samples.csv, users.csv, manifest.json), not
only the database.  Tiny untrained model, stand-in unlearning method: behaviour only."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.ml.data import PreparedData, decode_history, drop_interactions, load_prepared, save_prepared
from core.ml.model import LoadedModel
from core.services import batching, erasures, pipeline
from core.services.certificates import verify_certificate
from core.services.prepared_data import ScopeToPurge, purge_prepared
from tests.core.services.test_pipeline import INTAKE, JWKS, runtime, settings


def _partial_pair(data: PreparedData, user: str) -> str:
    """An item of ``user`` that has a training sample and appears in a later sample's history."""
    rows = data.samples[data.samples["user_id"] == user]
    in_histories = {i for h in rows["history"] for i, _ in decode_history(h)}
    train_items = set(rows[rows["split"] == "train"]["item_id"])
    return sorted(in_histories & train_items)[0]


def test_drop_interactions_removes_users_and_pairs(small_data: PreparedData) -> None:
    item = _partial_pair(small_data, "u2")
    kept = drop_interactions(small_data, users=["u1"], pairs=[("u2", item)])
    assert "u1" not in set(kept.samples["user_id"]) and "u1" not in set(kept.users["user_id"])
    u2 = kept.samples[kept.samples["user_id"] == "u2"]
    assert item not in set(u2["item_id"]) and len(u2) > 0
    assert all(i != item for h in u2["history"] for i, _ in decode_history(h))
    assert "u2" in set(kept.users["user_id"]) and len(kept.items) == len(small_data.items)
    others = small_data.samples[~small_data.samples["user_id"].isin(["u1", "u2"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        kept.samples[~kept.samples["user_id"].isin(["u2"])].reset_index(drop=True), others
    )
    assert drop_interactions(small_data).content_hash() == small_data.content_hash()


def test_purge_prepared_rewrites_atomically_and_is_idempotent(
    small_data: PreparedData, tmp_path: Path
) -> None:
    folder = tmp_path / "data" / "default"
    before = save_prepared(small_data, folder)
    (folder / "notes.txt").write_text("kept")
    (tmp_path / "data" / ".default.old").mkdir()  # a copy left by a crash: it still holds erased data
    result = purge_prepared(folder, [ScopeToPurge("r1", "u1", None)])
    assert result is not None and result.sha256_before == before != result.sha256_after
    assert result.samples_removed["r1"] == int((small_data.samples["user_id"] == "u1").sum()) > 0
    assert result.profiles_removed == 1
    reloaded = load_prepared(folder)  # the manifest's hash matches the new content
    assert reloaded.content_hash() == result.sha256_after and "u1" not in set(reloaded.samples["user_id"])
    assert "u1" not in (folder / "users.csv").read_text().split()
    assert (folder / "notes.txt").read_text() == "kept"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".default.lock", "default"]
    again = purge_prepared(folder, [ScopeToPurge("r1", "u1", None)])
    assert again is not None and again.samples_removed == {"r1": 0}
    assert again.sha256_after == again.sha256_before == result.sha256_after
    assert purge_prepared(tmp_path / "missing", [ScopeToPurge("r1", "u1", None)]) is None


def test_job_purges_prepared_files_and_certifies_it(
    session: Session,
    v1_id: str,
    seeded: PreparedData,
    tiny_model: LoadedModel,
    adapters_dir: Path,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data" / "default"
    before = save_prepared(seeded, folder)
    item = _partial_pair(seeded, "u3")
    whole, _ = erasures.create_erasure_request(session, "u2", None, INTAKE)
    partial, _ = erasures.create_erasure_request(session, "u3", [item], INTAKE)
    session.commit()
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()
    outcome = pipeline.run_job(
        session, job_id, runtime(tiny_model, adapters_dir, prepared_data_dir=folder), session.commit
    )
    assert outcome.status == "succeeded", outcome.reason
    on_disk = load_prepared(folder)
    assert on_disk.content_hash() != before
    assert "u2" not in set(on_disk.samples["user_id"]) and "u2" not in set(on_disk.users["user_id"])
    u3 = on_disk.samples[on_disk.samples["user_id"] == "u3"]
    assert item not in set(u3["item_id"]) and not u3.empty
    assert all(i != item for h in u3["history"] for i, _ in decode_history(h))
    record = batching.get_job(session, job_id).metrics["prepared_data"]
    assert record["sha256_after"] == on_disk.content_hash() and record["purged_at"]
    for request, expected in ((whole, (seeded.samples["user_id"] == "u2").sum()), (partial, 1)):
        envelope = erasures.get_certificate(session, request.id)
        certificate = verify_certificate(envelope, JWKS)["predicate"]
        other = partial if request is whole else whole  # the batch's other request is not named
        assert other.id not in base64.b64decode(envelope["payload"]).decode()
        assert certificate["erased"]["prepared_data"]["samples_removed"] == expected
        assert certificate["erased"]["prepared_data"]["sha256_after"] == on_disk.content_hash()
        assert certificate["timestamps"]["prepared_data_purged_at"] == record["purged_at"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_overwrites_deleted_rows(session: Session) -> None:
    assert session.execute(text("PRAGMA secure_delete")).scalar() == 1
