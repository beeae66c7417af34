"""The typed job configuration stored on each job row, the gates' thresholds beside it, and the status
filters: the stored JSON keeps its shape (no migration), and bad values are refused by name."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.orm import Session

from core.db.models import ErasureStatus, JobStatus, VersionStatus
from core.ml.evidence import EvidenceConfig
from core.services import batching, erasures, registry
from core.services.batching import JobSettings
from core.services.errors import InvalidInput
from core.services.job_config import JobConfig, stored_evidence_config

# the JSON a job row held before the configuration was typed
STORED = {
    "method": "e2urec",
    "method_config": {"alpha": 2.0, "seed": 3},
    "valid_samples": 256,
    "max_verify_samples": 512,
    "max_retries": 3,
    "seed": 1,
    "exact_fallback": True,
    "fallback_method_config": {},
}


# ... and since the verifier calibrates on held-out users, the size of that sample
NOW_STORED = {**STORED, "reference_users": 40, "reference_samples": 20}
# ... and the cap on the jobs a request goes through
CAPPED = {**NOW_STORED, "max_attempts": 8}


def test_job_settings_make_the_stored_json() -> None:
    settings = JobSettings(method_config={"alpha": 2.0}, seed=1, exact_fallback=True)
    assert settings.job_config(attempt_seed=2).to_dict() == CAPPED


def test_job_config_round_trips_json_and_reads_the_json_of_before() -> None:
    plain = JobConfig.from_dict(json.loads(json.dumps(CAPPED)))
    assert plain.to_dict() == CAPPED and plain.falls_back
    assert JobConfig.from_dict(STORED) == plain  # the sizes of before the held-out users: the defaults
    assert JobConfig.from_dict(NOW_STORED) == plain  # stored before the attempt cap: the default cap
    sizes = plain.verification_sizes()
    assert (sizes.valid_samples, sizes.max_forget_samples, sizes.reference_users) == (256, 512, 40)
    assert (sizes.reference_samples, sizes.seed) == (20, 1)
    fallback = JobConfig(method="retrain", exact_fallback=True, fallback=True, fallback_of_job=7)
    stored = json.loads(json.dumps(fallback.to_dict()))
    assert stored["fallback"] is True and stored["fallback_of_job"] == 7
    assert JobConfig.from_dict(stored) == fallback and not fallback.falls_back


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"speed": 1}, r"unknown job configuration members \['speed'\]"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"valid_samples": "many"}, "valid_samples must be an integer >= 0"),
        ({"method": ""}, "method must be a method name"),
        ({"method_config": []}, "method_config must be a JSON object"),
        ({"fallback": True}, "a fallback job names the job it falls back from"),
    ],
)
def test_job_config_refuses_bad_values(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobConfig.from_dict({**STORED, **change})


def test_stored_evidence_config_round_trips_reads_old_point_gates_and_refuses_bad_values() -> None:
    config = EvidenceConfig(alpha=0.01, power=0.9, effect_of_interest=0.2, utility_margin=0.05)
    assert stored_evidence_config(json.loads(json.dumps(config.to_dict()))) == config
    # a job row of the point-gate verifier: its utility margin stays, the retired margins go
    old = {"utility_margin": 0.03, "mia_margin": 0.1, "gold_margin": 0.05}
    assert stored_evidence_config(old) == EvidenceConfig(utility_margin=0.03)
    with pytest.raises(ValueError, match=r"unknown EvidenceConfig field\(s\): \['speed'\]"):
        stored_evidence_config({"speed": 1.0})
    with pytest.raises(ValueError, match="alpha must be in"):
        stored_evidence_config({"alpha": 0.7})


def test_status_filters_take_the_vocabularies(session: Session) -> None:
    assert erasures.list_erasure_requests(session, ErasureStatus.NOT_UNLEARNED) == []
    assert batching.list_jobs(session, "running") == []
    assert registry.list_versions(session, VersionStatus.REJECTED) == []
    for listing in (erasures.list_erasure_requests, batching.list_jobs, registry.list_versions):
        with pytest.raises(InvalidInput, match="status must be one of"):
            listing(session, "finished")
    with pytest.raises(InvalidInput, match=r"\['pending', 'running', 'succeeded', 'failed'\]"):
        batching.list_jobs(session, "done")
    assert JobStatus.RUNNING == "running"  # stored values are these strings
