"""docker-compose.yml against the compose specification's JSON schema (the copy check-jsonschema ships,
under the compose-spec project's Apache-2.0 licence), and the shape the production-topology test and the
README rely on.  No engine runs here: `docker compose config` needs the compose plugin, which this
machine's docker client lacks."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest
import yaml

from core.queue_contract import DEFAULT_QUEUE, LIGHT_TASK_HARD_SECONDS, UNLEARNING_QUEUE
from tests.installed import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text())
    return schema


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


def test_compose_file_follows_the_compose_specification() -> None:
    schema = _schema()
    jsonschema.validators.validator_for(schema)(schema).validate(_compose())


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = _compose()
    broken["services"]["api"]["restart_policy"] = "always"  # `restart` is the key
    schema = _schema()
    with pytest.raises(jsonschema.ValidationError, match="restart_policy"):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)


def test_every_service_is_pinned_restarted_and_checked() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: floating tag {image}"
        if name.startswith("init"):
            assert service["restart"] == "no", name  # a one-shot
        else:
            assert service["restart"] == "unless-stopped", name
            assert "healthcheck" in service, name


def _queue(service: dict[str, Any]) -> str:
    command: list[str] = service["command"]
    return command[command.index("-Q") + 1]


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_gpu_jobs_and_light_tasks_have_their_own_workers_and_grace() -> None:
    services = _compose()["services"]
    for gpu in ("worker", "worker-cpu"):
        assert _queue(services[gpu]) == UNLEARNING_QUEUE and "-c" in services[gpu]["command"]
        assert services[gpu]["command"][services[gpu]["command"].index("-c") + 1] == "1"
        # a stop waits for the running job's phase: minutes on a GPU, and never less than its lease
        assert _seconds(services[gpu]["stop_grace_period"]) >= 10 * 60
    assert _queue(services["worker-light"]) == DEFAULT_QUEUE
    assert _seconds(services["worker-light"]["stop_grace_period"]) > LIGHT_TASK_HARD_SECONDS


def test_no_secret_is_a_plain_default() -> None:
    compose = _compose()
    text = COMPOSE.read_text()
    assert "POSTGRES_PASSWORD:" not in text and "E2U_CERTIFICATE_SALT:" not in text
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith(
        "/run/secrets/"
    )
    assert set(compose["secrets"]) == {"postgres_password", "certificate_salt"}
