"""Starting the service: first-start preparation (migrations, data, model, adapter v1, bootstrap; in
development a signing key and an API key, written to files) and the embedded mode that runs the API and a
real Celery worker (with beat) as two processes of one command."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.settings import ApiSettings
from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.db.repositories import audit as audit_repo
from core.queue_contract import DEFAULT_QUEUE, UNLEARNING_QUEUE
from core.services import api_keys as api_key_service
from core.services import registry as registry_service
from core.services.bootstrap import bootstrap, registry_is_initialised

log = logging.getLogger(__name__)

ALL_SCOPES = ["admin", "erase", "recommend"]


@dataclass(frozen=True)
class InitReport:
    active_version: str | None
    imported_interactions: int
    signing_key_id: str  # the kid of the key that signs certificates (published at /.well-known/jwks.json)
    dev_api_key_file: Path | None  # an all-scope key created now (development, no key existed), mode 0600


def initialise(
    settings: ApiSettings,
    prepare_data: Callable[[], None],
    train_v1: Callable[[], None],
    create_dev_key: bool = True,
) -> InitReport:
    """Migrate the database; on an empty registry prepare the data and train adapter v1 (the callbacks,
    each skipped when its output exists) and register both.  In development, create the signing key under
    ``home/keys`` and, if no API key exists, an all-scope key written to ``settings.dev_key_path`` (mode
    0600; never printed).  Idempotent: later starts only migrate."""
    url = settings.database_url_resolved
    keyring = settings.keyring()  # created here on a development first start
    upgrade(url, kek_file=settings.data_kek_path)
    sessions = session_factory(url, keyring)
    with sessions() as session:
        # once any version exists, v1 (which still carries erased data) must never be re-made or re-registered
        initialised = registry_is_initialised(session)
    imported = 0
    if not initialised:
        if not (settings.data_dir / "manifest.json").exists():
            prepare_data()
        v1 = settings.adapters_dir / "v1"
        if not (v1 / "adapter_model.safetensors").exists():
            train_v1()
        with sessions() as session:
            report = bootstrap(session, settings.data_dir, v1, settings.base_model)
            session.commit()
        imported = report.imported_interactions
    signing_key = settings.signing_keys.active()  # created here on a development first start
    key_file = None
    if create_dev_key and settings.environment == "development" and settings.dev_bootstrap_key:
        with sessions() as session:
            if not audit_repo.list_keys(session):
                key = api_key_service.create_api_key(session, "dev-admin", ALL_SCOPES)
                key_file = _write_secret(settings.dev_key_path, key)
                session.commit()
    with sessions() as session:
        active = registry_service.active_adapter(session)
    return InitReport(active.version_id if active else None, imported, signing_key.kid, key_file)


def _write_secret(path: Path, secret: str) -> Path:
    """Write ``secret`` to ``path`` readable by its owner only (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secret + "\n")
    return path


def worker_command(concurrency: int = 1, beat: bool = True) -> list[str]:
    """The Celery worker of the embedded mode: both queues, one job at a time, beat inside."""
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    command += ["-Q", f"{UNLEARNING_QUEUE},{DEFAULT_QUEUE}", "-c", str(concurrency), "--loglevel", "INFO"]
    if beat:
        command.append("-B")
    return command


def start_worker(
    settings: ApiSettings, log_file: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the worker in its own session (a terminal's Ctrl-C reaches only the launcher, which then stops
    the worker cleanly).  Its output goes to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # the worker runs in the launcher's environment (development unless E2U_ENVIRONMENT says otherwise)
    own = {"E2U_HOME": str(settings.home.resolve()), "E2U_ENVIRONMENT": settings.environment}
    env = os.environ | own | (extra_env or {})
    with log_file.open("ab") as out:
        return subprocess.Popen(
            worker_command(), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float = 20.0) -> int:
    """Warm shutdown (SIGTERM: the running task finishes or, past the grace time, is cut off and its job is
    taken up again from its lease on the next start), then SIGKILL.  Returns the exit code."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        log.warning("worker did not stop in %.0f s; killing it", grace_seconds)
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def wait_for_worker(process: subprocess.Popen[bytes], log_file: Path, seconds: float = 60.0) -> None:
    """Wait until the worker says it is ready; raise with its log's tail if it exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
            raise RuntimeError(f"the worker exited with {process.returncode}:\n{tail}")
        if log_file.exists() and " ready." in log_file.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not become ready in {seconds:.0f} s (see {log_file})")
