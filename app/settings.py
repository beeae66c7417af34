"""Settings only the HTTP edge reads, on top of ``core.settings.Settings`` (same ``E2U_`` prefix)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from core.settings import Settings


class ApiSettings(Settings):
    host: str = "127.0.0.1"
    port: int = 8000
    adapter_poll_seconds: float = 5.0  # fallback poll of the registry's active version (Redis may be absent)
    inference_batch_size: int = 16  # samples per forward pass when scoring pairs
    max_candidates: int = 1000  # the most candidates one recommendation request may rank
    max_import_bytes: int = 200 * 2**20  # the largest CSV file one import may upload
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
