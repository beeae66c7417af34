"""An erasure end to end on the tiny random T5 (an encoder-decoder base) with the real E2URec: the same
pipeline, verifier, registry and certificate as for the causal model; behaviour only, never quality."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Interaction
from core.ml.data import PreparedData
from core.ml.model import LoadedModel, ModelConfig, load_base
from core.services import batching, erasures, pipeline, registry
from core.services.certificates import verify_certificate
from tests.core.conftest import register_random_v1
from tests.core.services.test_pipeline import INTAKE, JWKS, runtime, settings


def test_an_erasure_on_an_encoder_decoder_base_promotes_a_certified_child(
    session: Session, seeded: PreparedData, tiny_t5_config: ModelConfig, adapters_dir: Path
) -> None:
    t5: LoadedModel = load_base(tiny_t5_config)
    v1_id = register_random_v1(session, t5, adapters_dir)

    request, _ = erasures.create_erasure_request(session, "u5", None, INTAKE)
    session.commit()
    [job_id] = batching.trigger_batch_now(session, settings(method="e2urec"))
    session.commit()
    outcome = pipeline.run_job(session, job_id, runtime(t5, adapters_dir), session.commit)

    assert outcome.status == "succeeded", outcome.reason
    job = batching.get_job(session, job_id)
    # E2URec's child itself (no exact fallback); the untrained parent learned nothing to forget, so the
    # verifier says so, as it does for the causal model (test_pipeline)
    assert job.metrics["unlearning"]["method"] == "e2urec"
    assert job.metrics["verdict"] == "no_prior_signal", job.metrics["reasons"]
    active = registry.active_adapter(session)
    assert active is not None and active.version_id == job.child_version_id != v1_id
    saved = json.loads((Path(active.artifact_path) / "adapter_config.json").read_text())
    assert saved["task_type"] == "SEQ_2_SEQ_LM" and set(saved["target_modules"]) == {"q", "v"}
    assert session.scalars(select(Interaction).where(Interaction.user_id == "u5")).first() is None
    signed = verify_certificate(erasures.get_certificate(session, request.id), JWKS)
    assert signed["predicate"]["child_adapter"]["id"] == active.version_id
