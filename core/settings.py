"""Service settings.  Only the edges (CLI, API, worker) instantiate ``Settings``; core functions take the
values they need as explicit arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.db.engine import PoolConfig

DEV_SIGNING_KEY = "dev-only-signing-key-change-me"
DEV_CERTIFICATE_SALT = "dev-only-certificate-salt-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="E2U_", env_file=".env", extra="ignore")

    environment: str = "development"  # "development" or "production"
    home: Path = Path("var")  # prepared data, converted models, adapter store, embedded database
    base_model: str = "smollm2"  # "smollm2", "tiny", or a local model folder / hub id on disk
    history_len: int = 5

    @property
    def data_dir(self) -> Path:
        return self.home / "data" / "default"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    signing_key: str = DEV_SIGNING_KEY
    certificate_salt: str = DEV_CERTIFICATE_SALT  # salts the user-id hash written into certificates

    # ------------------------------------------------------------------ persistence and queue
    # Empty strings mean "the embedded default under ``home``" (SQLite file, kombu filesystem broker).
    database_url: str = ""
    broker_url: str = ""  # production: redis://host:6379/0
    result_backend: str = ""  # production: redis://host:6379/1
    redis_url: str | None = None  # pub/sub for promotion events; None: the API polls the active alias
    visibility_timeout_seconds: int = 6 * 3600  # above the longest job (Redis broker redelivery)
    # connections per process: ``db_pool_size`` kept open, up to ``db_max_overflow`` more under load; a
    # checkout waits at most ``db_pool_timeout_seconds`` (the API then answers 503 + Retry-After).  The API
    # admits at most size + overflow requests at once (app/admission.py), so none waits for a connection.
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)

    @property
    def db_pool(self) -> PoolConfig:
        return PoolConfig(self.db_pool_size, self.db_max_overflow, self.db_pool_timeout_seconds)

    # ------------------------------------------------------------------ erasure requests and batching
    erasure_deadline_days: int = 30
    batch_size: int = 8  # a batch forms when this many requests wait ...
    batch_max_wait_seconds: float = 300.0  # ... or the oldest has waited this long
    batch_poll_seconds: float = 15.0  # how often the beat task looks for batches and expired leases
    lease_seconds: float = 120.0  # a job whose lease is not renewed for this long is taken up again
    max_retries: int = 3  # failed gates before the requests are marked failed

    # ------------------------------------------------------------------ unlearning and verification
    unlearning_method: str = "e2urec"
    unlearning_config: dict[str, Any] = Field(default_factory=dict)  # the method's hyper-parameters (JSON)
    # DESIGN "The method" step 6: when a batch has used up its retries, retrain an adapter from the base on
    # all training data not erased (method "retrain"), verify and promote it like any other child
    exact_fallback: bool = False
    exact_fallback_config: dict[str, Any] = Field(default_factory=dict)  # RetrainConfig JSON; "train"
    # defaults to the recipe adapter v1 was trained with
    verify_valid_samples: int = 256  # fixed held-out validation subset for the utility gate
    verify_max_samples: int = 512  # cap on |F| and on the unseen sample for the forgetting gates
    utility_margin: float = 0.02  # child valid AUC may fall at most this far below the parent's
    mia_margin: float = 0.1  # |membership-inference AUC - 0.5| at most this
    gold_margin: float = 0.05  # mean gold-label P on F at most this above unseen data

    @property
    def database_url_resolved(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'e2u.sqlite').resolve()}"

    @property
    def broker_url_resolved(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def result_backend_resolved(self) -> str:
        return self.result_backend or f"file://{(self.home / 'celery' / 'results').resolve()}"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment != "development" and self.signing_key == DEV_SIGNING_KEY:
            raise ValueError("E2U_SIGNING_KEY must be set outside development")
        if self.environment != "development" and self.certificate_salt == DEV_CERTIFICATE_SALT:
            raise ValueError("E2U_CERTIFICATE_SALT must be set outside development")
        return self
