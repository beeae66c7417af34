"""Service settings.  Only the edges (CLI, API, worker) instantiate ``Settings``; core functions take the
values they need as explicit arguments."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SIGNING_KEY = "dev-only-signing-key-change-me"


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

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment != "development" and self.signing_key == DEV_SIGNING_KEY:
            raise ValueError("E2U_SIGNING_KEY must be set outside development")
        return self
