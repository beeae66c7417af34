"""The typed job configuration stored on each job row, the gates' thresholds beside it, and the status
filters: the stored JSON keeps its shape (no migration), and bad values are refused by name."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.orm import Session

from core.db.models import ErasureStatus, JobStatus, VersionStatus
from core.ml.verification import Thresholds
from core.services import batching, erasures, registry
from core.services.batching import JobSettings
from core.services.errors import InvalidInput
from core.services.job_config import JobConfig

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


def test_job_settings_make_the_stored_json_of_before() -> None:
    settings = JobSettings(method_config={"alpha": 2.0}, seed=1, exact_fallback=True)
    assert settings.job_config(attempt_seed=2).to_dict() == STORED


def test_job_config_round_trips_json() -> None:
    plain = JobConfig.from_dict(json.loads(json.dumps(STORED)))
    assert plain.to_dict() == STORED and plain.falls_back
    fallback = JobConfig(method="retrain", exact_fallback=True, fallback=True, fallback_of_job=7)
    stored = json.loads(json.dumps(fallback.to_dict()))
    assert stored["fallback"] is True and stored["fallback_of_job"] == 7
    assert JobConfig.from_dict(stored) == fallback and not fallback.falls_back


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"speed": 1}, r"unknown job configuration members \['speed'\]"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"valid_samples": "many"}, "valid_samples must be an integer >= 0"),
        ({"method": ""}, "method must be a method name"),
        ({"method_config": []}, "method_config must be a JSON object"),
        ({"fallback": True}, "a fallback job names the job it falls back from"),
    ],
)
def test_job_config_refuses_bad_values(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobConfig.from_dict({**STORED, **change})


def test_thresholds_round_trip_and_refuse_bad_values() -> None:
    thresholds = Thresholds(utility_margin=1.0, mia_margin=0.5, gold_margin=-1.0)
    assert Thresholds.from_dict(json.loads(json.dumps(thresholds.to_dict()))) == thresholds
    with pytest.raises(ValueError, match=r"unknown thresholds \['speed'\]"):
        Thresholds.from_dict({"speed": 1.0})
    with pytest.raises(ValueError, match="threshold mia_margin must be a number"):
        Thresholds(mia_margin=float("nan"))


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
