"""The production shape, without a container engine: the services of docker-compose.yml (their commands
and health checks, read from the file) started as separate OS processes from the installed wheel
(tests/installed.py), against a throwaway PostgreSQL database and a Redis database of this test's own,
with the secrets read from files.

The tiny synthetic data prepared, `init` (migrations, adapter v1 on the tiny model, bootstrap), then the
API (uvicorn, two processes), the GPU-queue worker, the light-queue worker and the beat, and their health
checks.  One GDPR erasure over HTTP, batched by the beat's timer (no admin trigger): accepted, unlearned,
verified, promoted; both API processes serve the new version and confirmed it in the certificate, which
verifies against the published keys.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.orm import sessionmaker

from core.data_keys import create_kek_file
from core.db.engine import make_engine
from core.ml.data import SampleConfig, prepare, save_prepared
from core.ml.model import TINY, ModelConfig, resolve_base
from core.services.api_keys import create_api_key
from core.services.certificates import verify_certificate
from core.settings import Settings
from core.signing import SigningKey
from tests.conftest import MODELS_DIR, synthetic_dataset
from tests.core.conftest import throwaway_database
from tests.installed import ROOT, clean_env, run
from tests.worker.conftest import leased_redis_db

pytestmark = pytest.mark.postgres

COMPOSE = ROOT / "docker-compose.yml"
# the CPU profile's services: the same commands as the GPU profile's, on CPU torch
SERVICES = ("api", "worker-cpu", "worker-light", "beat")
WAIT_SECONDS = 180.0


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (the compose file's own: one database, the default schema)."""
    # no password in the URL: it comes from the secret file (trust auth here takes any)
    with throwaway_database("e2u_topology") as (_, url):
        yield url


@dataclass
class Topology:
    venv: Path
    home: Path
    env: dict[str, str]
    base_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def logs(self) -> str:
        """Every service's exit status (if it ended) and its log's tail, for a failure's message."""
        parts = []
        for name, process in self.processes.items():
            tail = self.log(name).read_text(errors="replace")[-2500:] if self.log(name).exists() else ""
            parts.append(f"--- {name} (exit {process.poll()}):\n{tail}")
        return "\n".join(parts)

    def e2u(self, *args: str) -> str:
        return run(self.venv / "bin" / "e2u", *args, cwd=self.home, env=self.env)

    def start(self, name: str, command: list[str]) -> None:
        self.log(name).parent.mkdir(exist_ok=True)
        with self.log(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                command, cwd=self.home, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def healthcheck(self, service: str) -> subprocess.CompletedProcess[str]:
        """The service's compose health check, run here (``$$`` is compose's escape of ``$``)."""
        test = compose_services()[service]["healthcheck"]["test"]
        command = ["sh", "-c", test[1].replace("$$", "$")] if test[0] == "CMD-SHELL" else test[1:]
        env = self.env | {"HOSTNAME": socket.gethostname()}
        return subprocess.run(command, cwd=self.home, env=env, capture_output=True, text=True, timeout=120)

    def wait(self, what: str, check: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ended = [name for name, p in self.processes.items() if p.poll() is not None]
            assert not ended, f"{ended} ended while waiting for {what}\n{self.logs()}"
            value = check()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _scripts(venv: Path, folder: Path) -> Path:
    """``uvicorn`` and ``celery`` as the images have them: scripts of dependencies, which the installed
    environment reads from the running one's site-packages (so it has no scripts of theirs)."""
    folder.mkdir()
    for name in ("uvicorn", "celery"):
        script = folder / name
        script.write_text(f'#!/bin/sh\nexec "{venv / "bin" / "python"}" -m {name} "$@"\n')
        script.chmod(0o755)
    return folder


def _environment(venv: Path, home: Path, database_url: str, redis_url: str, port: int) -> dict[str, str]:
    secrets = home / "secrets"  # what compose mounts at /run/secrets
    secrets.mkdir()
    (secrets / "e2u_database_password").write_text("topology-password\n")
    (secrets / "e2u_certificate_salt").write_text("topology-salt\n")
    (home / "keys").mkdir()
    (home / "keys" / "signing-key.pem").write_bytes(SigningKey.generate().to_pem())
    create_kek_file(home / "keys" / "data-kek")  # as `openssl rand -base64 32 > keys/data-kek`
    env = clean_env(venv)
    env["PATH"] = f"{_scripts(venv, home / 'bin')}{os.pathsep}{env['PATH']}"
    return env | {
        # as the compose file's x-e2u-env, with this machine's services and the tiny model and data
        "E2U_ENVIRONMENT": "production",
        "E2U_SECRETS_DIR": str(secrets),
        "E2U_SIGNING_KEY_FILE": str(home / "keys" / "signing-key.pem"),
        "E2U_DATA_KEK_FILE": str(home / "keys" / "data-kek"),
        "E2U_DATABASE_URL": database_url,
        "E2U_BROKER_URL": redis_url,
        "E2U_RESULT_BACKEND": redis_url,
        "E2U_REDIS_URL": redis_url,
        "E2U_HOME": str(home),
        "E2U_BASE_MODEL": TINY,
        "E2U_HISTORY_LEN": "3",
        # the timer batches: a request waits at most a second, the beat looks every second
        "E2U_BATCH_MAX_WAIT_SECONDS": "1",
        "E2U_BATCH_POLL_SECONDS": "1",
        "E2U_UTILITY_MARGIN": "1.0",  # the tiny model is untrained: gates that any sane child passes
        "E2U_LOG_FORMAT": "json",  # as an operator would run it: one JSON object per line
        "UVICORN_HOST": "127.0.0.1",
        "UVICORN_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }


def _prepare_data(home: Path) -> None:
    """The tiny synthetic data set, prepared where `init` looks for it (no download)."""
    save_prepared(prepare(synthetic_dataset(), SampleConfig(history_len=3)), home / "data" / "default")


def _api_key(database_url: str, secrets: Path) -> str:
    """An all-scope key, as `e2u apikey create` makes it (in this process: one interpreter start less)."""
    password = (secrets / "e2u_database_password").read_text().strip()
    url = Settings(environment="development", database_url=database_url, database_password=password)
    engine = make_engine(url.database_url_resolved)
    try:
        with sessionmaker(bind=engine)() as session:
            key = create_api_key(session, "topology", ["admin", "erase", "recommend"])
            session.commit()
    finally:
        engine.dispose()
    return key


@pytest.fixture
def topology(
    installed_wheel: Path, tmp_path: Path, database_url: str, tiny_config: ModelConfig
) -> Iterator[Topology]:
    home = tmp_path / "home"
    home.mkdir()
    resolve_base(tiny_config)  # the tiny model is built once per machine ...
    (home / "models").symlink_to(MODELS_DIR)  # ... and shared
    port = _free_port()
    with leased_redis_db() as redis_url:
        env = _environment(installed_wheel, home, database_url, redis_url, port)
        topology = Topology(installed_wheel, home, env, f"http://127.0.0.1:{port}")
        _prepare_data(home)
        services = compose_services()
        # the one-shot init, as the cpu profile runs it, with a shorter quick-start training
        assert services["init-cpu"]["command"] == ["e2u", "init"]
        topology.e2u("init", "--quick-steps", "6")
        try:
            for name in SERVICES:
                topology.start(name, services[name]["command"])
            yield topology
        finally:
            topology.stop()


def _readiness(topology: Topology, client: httpx.Client) -> dict[str, Any] | None:
    try:
        answer = client.get(f"{topology.base_url}/readyz", headers={"Connection": "close"})
    except httpx.TransportError:
        return None
    body: dict[str, Any] = answer.json()
    return body


def _processes_serving(topology: Topology, client: httpx.Client, version: str, count: int) -> set[str]:
    """Ask /readyz until ``count`` distinct API processes have answered ready, serving ``version``."""
    seen: set[str] = set()

    def enough() -> bool:
        body = _readiness(topology, client)
        if body and body["ready"] and body["adapter_version"] == version:
            seen.add(body["process_id"])
        return len(seen) >= count

    topology.wait(f"{count} API processes serving {version}", enough)
    return seen


def test_compose_services_walk_an_erasure_through_the_beat(topology: Topology) -> None:
    headers = {"X-API-Key": _api_key(topology.env["E2U_DATABASE_URL"], topology.home / "secrets")}
    with httpx.Client(timeout=30) as client:
        adapters = topology.wait("the API", lambda: _readiness(topology, client))
        v1 = adapters["registry_version"]
        assert v1 is not None
        api_processes = _processes_serving(topology, client, v1, count=2)

        # every queue service answers its own health check
        for service in ("worker-cpu", "worker-light", "beat"):
            topology.wait(
                f"{service}'s health check", lambda s=service: topology.healthcheck(s).returncode == 0
            )

        # the erasure: accepted, then batched by the beat's timer and carried out, with no admin trigger
        filed = client.post(
            f"{topology.base_url}/v1/erasure-requests", json={"user_id": "u3"}, headers=headers
        )
        assert filed.status_code == 201, filed.text
        request = filed.json()
        assert request["status"] == "received"

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(
                f"{topology.base_url}/v1/erasure-requests/{request['id']}", headers=headers
            ).json()
            return body if body["status"] in ("completed", "not_unlearned", "failed") else None

        done = topology.wait("the erasure to complete", finished)
        assert done["status"] == "completed", (done, topology.logs())
        [job] = client.get(f"{topology.base_url}/v1/admin/jobs", headers=headers).json()["jobs"]
        assert job["status"] == "succeeded" and job["verdict"] == "passed", job
        new = job["child_version_id"]
        listed = client.get(f"{topology.base_url}/v1/admin/adapters", headers=headers).json()
        assert listed["active_version_id"] == new != v1

        # both API processes serve the new version (each answered /readyz with it)
        assert _processes_serving(topology, client, new, count=2) == api_processes
        assert topology.healthcheck("beat").returncode == 0  # still writing its schedule

        # the certificate: both processes confirmed the switch; it verifies against the published keys
        certificate = client.get(
            f"{topology.base_url}/v1/erasure-requests/{request['id']}/certificate", headers=headers
        ).json()
        jwks = client.get(f"{topology.base_url}/.well-known/jwks.json").json()
        scraped = client.get(f"{topology.base_url}/metrics").text
    _metrics_an_operator_alerts_on(scraped, new, job["id"])
    _json_log_lines_carry_request_and_job_ids(topology, job["id"])
    signed = verify_certificate(certificate, jwks)
    assert signed["subject"][0]["name"] == f"adapter:{new}"
    serving = signed["predicate"]["serving"]
    assert serving["version_id"] == new and serving["missing"] == []
    assert set(serving["confirmed"]) == api_processes
    assert signed["predicate"]["request_id"] == request["id"]


def _metrics_an_operator_alerts_on(scraped: str, version: str, job_id: int) -> None:
    """What /metrics showed after the walk: the backlog drained, the job's phases timed, its gate verdict
    counted, the process serving the new version (the figures read from the database are the same on
    every API process)."""
    lines = scraped.splitlines()
    assert "e2u_erasure_requests_open 0.0" in lines, scraped
    assert any(line.startswith("e2u_job_phase_seconds_count{") for line in lines), scraped
    assert any(line.startswith("e2u_gate_verdicts") and not line.startswith("#") for line in lines), scraped
    assert any(f'version="{version}"' in line for line in lines if line.startswith("e2u_active_adapter_info"))
    print(f"metrics seen after job {job_id}:")
    for line in lines:
        if line.startswith(("e2u_erasure_requests_open ", "e2u_gate_verdicts", "e2u_active_adapter_info")):
            print("  " + line)


def _json_log_lines_carry_request_and_job_ids(topology: Topology, job_id: int) -> None:
    """Every line our code wrote is one JSON object; the API's access lines carry a request id, and the
    GPU worker's lines about the job carry its job id."""
    ours: dict[str, list[dict[str, Any]]] = {}
    for name in ("api", "worker-cpu"):
        for line in topology.log(name).read_text(errors="replace").splitlines():
            if line.startswith("{"):
                ours.setdefault(name, []).append(json.loads(line))
    access = [r for r in ours.get("api", []) if r.get("logger") == "e2u.access"]
    assert access and all(r.get("request_id") for r in access), topology.logs()
    assert any(r.get("job_id") == job_id for r in ours.get("worker-cpu", [])), topology.logs()
    print(f"log lines: {len(access)} access lines with request ids; e.g. {json.dumps(access[-1])}")
