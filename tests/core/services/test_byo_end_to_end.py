"""Bring your own recommender, end to end on the tiny model: a custom prompt template (own wording and
label words), an adapter trained elsewhere by a short plain-PEFT script, implicit feedback (clicks with
sampled negatives).  Import -> erasure (real E2URec) -> verification -> signed certificate -> a serving
process switches to the new version, all through the code paths the service runs, unchanged."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Interaction
from core.ml.data import Dataset, FeedbackConfig, SampleConfig, prepare
from core.ml.evidence import EvidenceConfig
from core.ml.model import ModelConfig, load_base
from core.services import adapter_import, batching, erasures, pipeline, registry
from core.services.certificates import verify_certificate
from core.services.recommendations import prompt_catalog
from core.serving import ModelServer
from tests.byo import train_plain_peft
from tests.conftest import synthetic_dataset
from tests.core.services.test_pipeline import INTAKE, JWKS, settings
from tests.core.services.test_pipeline import runtime as pipeline_runtime
from tests.core.services.test_serving_switch import serving_process

TEMPLATE = """
system = "You predict whether a shopper will click a product."
question = '''{profile} Clicked before: {history}.
Will the shopper click "{target}"? Answer yes or no.'''
history_item = "{title}"
label_words = ["yes", "no"]
"""


def test_imported_adapter_custom_prompt_and_clicks_through_erasure_to_serving(
    session: Session,
    session_factory: sessionmaker[Session],
    tiny_config: ModelConfig,
    adapters_dir: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / "prompt.toml").write_text(TEMPLATE)
    loaded = load_base(replace(tiny_config, prompt_file=str(tmp_path / "prompt.toml")))
    assert [loaded.tokenizer.decode([i]) for i in loaded.label_ids] == ["yes", "no"]
    clicks = synthetic_dataset()
    clicks = Dataset(clicks.interactions.assign(rating=1.0), clicks.items, clicks.users)
    data = prepare(
        clicks, SampleConfig(history_len=3), FeedbackConfig(kind="implicit", negatives_per_positive=1)
    )
    customer_adapter = train_plain_peft(tmp_path / "customer-lora")

    # 1. import: the root of the lineage, marked imported, its data in the database
    imported = adapter_import.import_adapter(session, loaded, customer_adapter, data, adapters_dir, "tiny")
    session.commit()
    root = registry.get_version(session, imported.version_id)
    assert root.config["kind"] == "imported" and root.config["prompt"]["label_words"] == ["yes", "no"]

    # a serving process with the same base and prompt: the real model server and watcher
    server = ModelServer(copy.deepcopy(loaded), prompt_catalog(session), batch_size=8)

    watcher = serving_process(server, session_factory, poll_seconds=0.5)
    watcher.tick()
    assert server.active_version == imported.version_id
    prefix, _ = server.scorer.builder.parts("u4", [("i2", 1.0)], "i3")
    assert "Clicked before: Movie 2.\nWill the shopper click" in prefix

    # 2. an erasure, run by the job pipeline with E2URec and the real verifier
    request, _ = erasures.create_erasure_request(session, "u3", None, INTAKE)  # u1, u8: held out
    session.commit()
    # a utility margin any sane child meets: a utility set of this size cannot show 0.02 AUC (the service's
    # own end-to-end test does the same with E2U_UTILITY_MARGIN); the memorisation gates are the real ones
    job_settings = settings(EvidenceConfig(utility_margin=1.0), method="e2urec")
    [job_id] = batching.trigger_batch_now(session, job_settings)
    session.commit()
    runtime = pipeline_runtime(loaded, adapters_dir, serving_switch_timeout_seconds=60)
    watcher.start()
    try:
        outcome = pipeline.run_job(session, job_id, runtime, session.commit)
        assert outcome.status == "succeeded", outcome.reason
        job = batching.get_job(session, job_id)
        # 3. serving: the process switched to the child before the job completed
        assert server.active_version == job.child_version_id != imported.version_id
    finally:
        watcher.stop()
    assert job.verdict == "passed" and job.metrics["verdict"] in ("forgotten", "no_prior_signal")
    child = registry.get_version(session, job.child_version_id)
    assert registry.lineage(session, child.id) == [child.id, imported.version_id]
    assert registry.get_version(session, imported.version_id).status == "destroyed"
    assert session.scalars(select(Interaction).where(Interaction.user_id == "u3")).first() is None

    # 4. the certificate verifies and names the imported parent and the serving switch
    done = erasures.get_erasure_request(session, request.id)
    assert done.status == "completed" and done.forget_samples
    signed = verify_certificate(erasures.get_certificate(session, request.id), JWKS)
    assert [s["name"] for s in signed["subject"]] == [f"adapter:{child.id}", f"adapter:{imported.version_id}"]
    predicate = signed["predicate"]
    assert predicate["verification"]["verdict_class"] == job.metrics["verdict"]
    assert predicate["serving"]["version_id"] == child.id and predicate["serving"]["missing"] == []
