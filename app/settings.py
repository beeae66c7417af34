"""Settings only the HTTP edge reads, on top of ``core.settings.Settings`` (same ``E2U_`` prefix)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from core.settings import Settings


class ApiSettings(Settings):
    host: str = "127.0.0.1"
    port: int = 8000
    adapter_poll_seconds: float = 5.0  # fallback poll of the registry's active version (Redis may be absent)
    # how often the API reads the promotion stamp (core.events; a file of ~150 bytes): a promotion by the
    # embedded worker reaches the API within this time; 0: do not watch it
    promotion_stamp_poll_seconds: float = Field(default=0.05, ge=0.0)
    inference_batch_size: int = 16  # samples per forward pass when scoring pairs
    max_candidates: int = 1000  # the most candidates one recommendation request may rank
    max_import_bytes: int = 200 * 2**20  # the largest CSV file one import may upload
    # the largest request body, refused with 413 before it is parsed; only an admin key may send an import
    # larger than this (up to three files of E2U_MAX_IMPORT_BYTES)
    max_body_bytes: int = Field(default=2**20, ge=1024)
    # admission control (app/admission.py): requests inside the app at once (default: the database pool's
    # size + overflow), how long one may wait for a place, and how many may wait before refusal at once
    admission_limit: int | None = Field(default=None, ge=1)
    admission_wait_seconds: float = Field(default=10.0, ge=0)
    admission_queue: int = Field(default=2000, ge=0)
    # an API key read from the database is trusted this long without reading it again (one SELECT less per
    # request): a key revoked from the CLI or another API process is refused at most this much later (a
    # revocation through this process's API at once); 0: read on every request
    api_key_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    # the model server (core/serving.py): requests inside it at once (reading their inputs, queued or in a
    # forward pass; beyond: 503 + Retry-After at once); keep it below the 40 worker threads of the API
    model_queue: int = Field(default=16, ge=1)
    # queued requests of one adapter version share forward passes; None: on a GPU only (on the 2-core CPU it
    # gained no throughput and raised p50 1.5x: docs/benchmarks.md "Serving")
    batch_across_requests: bool | None = None
    model_batch_rows: int = Field(default=256, ge=1)  # candidate rows one shared forward round takes
    model_batch_wait_seconds: float = Field(default=0.002, ge=0)  # a round waits this long for admitted ones
    rank_batch_size: int = Field(
        default=32, ge=1
    )  # candidate rows per forward call when ranking (see Scorer)
    # development only: `e2u serve` creates an all-scope key if none exist and writes it to
    # ``dev_key_path`` (mode 0600); the key itself is never printed
    dev_bootstrap_key: bool = True
    # Where the worker writes adapters must be readable here too (a shared volume in docker-compose).

    @property
    def dev_key_path(self) -> Path:
        return self.home / "dev-admin-key"


class EmbeddedSettings(ApiSettings):
    """The settings of the embedded launcher (`e2u serve`, `e2u init`), the one place that asks for
    development by default; E2U_ENVIRONMENT (or .env) still wins, as for every other setting."""

    environment: Literal["development", "production"] = "development"


@lru_cache(maxsize=1)
def get_settings() -> ApiSettings:
    return ApiSettings()
