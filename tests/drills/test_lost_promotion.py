"""Drill: a promotion whose pub/sub message is lost (no Redis at all here).  Two real API processes
(uvicorn) serve v1; a new version is promoted in the registry and no message is sent: each process
reaches it by its poll of the registry, within the poll interval (plus the adapter's load)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from core.ml.model import adapter_sha256
from core.services import registry
from tests.conftest import MODELS_DIR
from tests.drills import harness

POLL_SECONDS = 2.0
LOAD_ALLOWANCE_SECONDS = 3.0  # reading and attaching a tiny adapter on a busy two-core machine


def served_version(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json().get("adapter_version")
    except (httpx.HTTPError, ValueError):
        return None


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_every_api_process_reaches_a_promotion_whose_message_was_lost(
    session: Session, v1_id: str, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "models").symlink_to(MODELS_DIR)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("E2U_")},
        "E2U_HOME": str(tmp_path),
        "E2U_DATABASE_URL": db_url,
        "E2U_BASE_MODEL": "tiny",
        "E2U_ENVIRONMENT": "development",
        "E2U_ADAPTER_POLL_SECONDS": str(POLL_SECONDS),  # no E2U_REDIS_URL: no pub/sub message ever comes
        "OMP_NUM_THREADS": "1",
    }
    ports = [harness.free_port(), harness.free_port()]
    processes = []
    for port in ports:
        command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)]
        log = (tmp_path / f"api-{port}.log").open("wb")
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 180
        while any(served_version(p) != v1_id for p in ports):
            logs = [(tmp_path / f"api-{p}.log").read_text()[-2000:] for p in ports]
            assert time.monotonic() < deadline, logs
            assert all(p.poll() is None for p in processes), "an API process exited"
            time.sleep(0.5)
        v2 = tmp_path / "adapters" / "v2"
        shutil.copytree(registry.get_version(session, v1_id).artifact_path, v2)
        registry.register_version(session, "v2", v1_id, "tiny", v2, adapter_sha256(v2), {}, {}, set())
        registry.promote_version(session, "v2", v1_id, 1, "drill")
        session.commit()  # ... and no promotion message is published
        promoted = time.monotonic()
        reached: dict[int, float] = {}
        while len(reached) < len(ports) and time.monotonic() - promoted < 30:
            for port in ports:
                if port not in reached and served_version(port) == "v2":
                    reached[port] = time.monotonic() - promoted
            time.sleep(0.1)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    assert len(reached) == len(ports), reached
    assert max(reached.values()) <= POLL_SECONDS + LOAD_ALLOWANCE_SECONDS, reached
    print(
        f"\nDRILL lost-promotion: no pub/sub; {len(ports)} API processes served v2 after "
        + ", ".join(f"{s:.1f} s" for s in reached.values())
        + f" (poll interval {POLL_SECONDS:.0f} s)"
    )
