"""An item-scope erasure reaches every prompt that carries the erased rating: the sample of the item and
the user's other training samples whose history mentions it.  Tiny untrained model, stand-in method."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from core.db.repositories import catalog as catalog_repo
from core.ml.data import PreparedData, decode_history, load_prepared, save_prepared
from core.ml.model import LoadedModel
from core.services import batching, erasures, pipeline
from tests.core.services.test_pipeline import INTAKE, runtime, settings


def test_item_erasure_forgets_the_prompts_that_mention_it_and_files_match_rows(
    session: Session,
    v1_id: str,
    seeded: PreparedData,
    tiny_model: LoadedModel,
    adapters_dir: Path,
    tmp_path: Path,
) -> None:
    train = seeded.samples[seeded.samples["split"] == "train"]
    user = sorted(set(train["user_id"]))[0]
    own = train[train["user_id"] == user]
    item = own.iloc[0]["item_id"]
    mentioning = sum(any(i == item for i, _ in decode_history(h)) for h in own["history"])
    assert mentioning > 0
    folder = tmp_path / "data" / "default"
    save_prepared(seeded, folder)
    request, _ = erasures.create_erasure_request(session, user, [item], INTAKE)
    session.commit()
    [job_id] = batching.trigger_batch_now(session, settings())
    session.commit()
    outcome = pipeline.run_job(
        session, job_id, runtime(tiny_model, adapters_dir, prepared_data_dir=folder), session.commit
    )
    assert outcome.status == "succeeded", outcome.reason
    done = erasures.get_erasure_request(session, request.id)
    assert done.forget_samples == 1 + mentioning  # the item's sample and every prompt that mentions it
    # the database rows and the prepared files hold the same samples, none mentioning the item
    rows = catalog_repo.usable_interactions(session, user_id=user)  # opened as stored (no live scope left)
    stored = list(zip(rows["item_id"], rows["history"], rows["split"], strict=True))
    on_disk = load_prepared(folder).samples
    on_disk = on_disk[on_disk["user_id"] == user]
    assert sorted((str(i), str(h), str(s)) for i, h, s in stored) == sorted(
        zip(on_disk["item_id"], on_disk["history"], on_disk["split"], strict=True)
    )
    assert len(stored) == (seeded.samples["user_id"] == user).sum() - 1
    assert all(i != item for _, h, _ in stored for i, _ in decode_history(h))
