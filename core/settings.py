"""Service settings.  Only the edges (CLI, API, worker) instantiate ``Settings``; core functions take the
values they need as explicit arguments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

from core.data_keys import DataKeyError, Keyring
from core.db.engine import PoolConfig
from core.logs import LogFormat
from core.services.webhooks import WebhookConfig, WebhookSecretError, signer
from core.signing import KeyStore, SignatureError, SigningKey
from core.suppression import SuppressionLedger

DEV_CERTIFICATE_SALT = "dev-only-certificate-salt-change-me"
# Secrets from files (docker/compose secrets): a file per setting, named like its variable in lower case
# (``/run/secrets/e2u_certificate_salt``, ``e2u_database_password``); the environment still wins.
SECRETS_DIR = Path("/run/secrets")


class LogSettings(BaseSettings):
    """How every process writes its log (``core.logs``); on its own so that a command can set up logging
    before the rest of the settings is read (and refused, in production, for a missing secret)."""

    model_config = SettingsConfigDict(env_prefix="E2U_", env_file=".env", extra="ignore")

    log_format: LogFormat = "text"  # "json": one JSON object per line, for a log collector
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(LogSettings):
    model_config = SettingsConfigDict(env_prefix="E2U_", env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic's own order (arguments, environment, .env, secret files), with the secrets folder
        ``E2U_SECRETS_DIR`` (default /run/secrets) read only where it exists: outside a container there
        is none, and that is no error."""
        folder = Path(os.environ.get("E2U_SECRETS_DIR", SECRETS_DIR))
        secrets = [SecretsSettingsSource(settings_cls, secrets_dir=folder)] if folder.is_dir() else []
        return init_settings, env_settings, dotenv_settings, *secrets

    # production unless the embedded launcher (`e2u serve`, `e2u init`) asks for development: production
    # refuses to start without a signing key file and a real certificate salt
    environment: Literal["development", "production"] = "production"
    home: Path = Path("var")  # prepared data, converted models, adapter store, embedded database
    # "smollm2", "tiny", "tiny-t5", or a local model folder / hub id on disk (causal LM or T5-style seq2seq)
    base_model: str = "smollm2"
    history_len: int = 5
    # bring your own recommender: a TOML prompt template (core/ml/prompts.py load_template), checked when
    # the model loads; None: the built-in prompt
    prompt_file: Path | None = None

    @property
    def prompt_file_name(self) -> str | None:
        """``prompt_file`` as ``ModelConfig.prompt_file`` takes it."""
        return str(self.prompt_file) if self.prompt_file else None

    @property
    def data_dir(self) -> Path:
        return self.home / "data" / "default"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def promotion_stamp_path(self) -> Path:
        return self.promotion_stamp_file or self.home / "run" / "adapter-promoted.json"

    # the Ed25519 private key that signs certificates (PKCS#8 PEM, e.g. `openssl genpkey -algorithm
    # ed25519`); required in production; development: ``home/keys/signing-key.pem``, created on first use
    signing_key_file: Path | None = None
    retired_keys_dir: Path | None = None  # retired public JWKs (*.jwk.json); default home/keys/retired
    certificate_salt: str = DEV_CERTIFICATE_SALT  # salts the user-id hash written into certificates

    @property
    def signing_keys(self) -> KeyStore:
        """The active signing key and the retired public keys (created on first use in development)."""
        keys = self.home / "keys"
        return KeyStore(
            active_path=self.signing_key_file or keys / "signing-key.pem",
            retired_dir=self.retired_keys_dir or keys / "retired",
            create_missing=self.environment == "development",
        )

    # ------------------------------------------------------------------ data keys and suppression ledger
    # the key-encryption key that wraps every user's data key (docs/privacy.md), a file outside the
    # database; required in production (`e2u keys create-kek PATH`); development: home/keys/data-kek
    data_kek_file: Path | None = None
    # the append-only list of completed erasures that a restored backup replays before serving; keep it
    # outside the database backups; default home/keys/suppression-ledger.jsonl
    suppression_ledger_file: Path | None = None

    @property
    def data_kek_path(self) -> Path:
        return self.data_kek_file or self.home / "keys" / "data-kek"

    def keyring(self) -> Keyring:
        """A new keyring on the KEK file (created on first use in development); one per process."""
        return Keyring(self.data_kek_path, create_missing=self.environment == "development")

    @property
    def suppression_ledger(self) -> SuppressionLedger:
        path = self.suppression_ledger_file or self.home / "keys" / "suppression-ledger.jsonl"
        return SuppressionLedger(path, self.certificate_salt)

    # ------------------------------------------------------------------ persistence and queue
    # Empty strings mean "the embedded default under ``home``" (SQLite file, kombu filesystem broker).
    database_url: str = ""
    # the password of the database URL's user, kept out of the URL (a secret file: e2u_database_password);
    # it replaces any password the URL holds
    database_password: SecretStr | None = None
    broker_url: str = ""  # production: redis://host:6379/0
    result_backend: str = ""  # production: redis://host:6379/1
    redis_url: str | None = None  # pub/sub for promotion events; None: the API polls the active alias
    # the promotion stamp (core.events): a file every process sharing ``home`` sees, the channel of the
    # embedded mode (no Redis); default home/run/adapter-promoted.json
    promotion_stamp_file: Path | None = None
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
    # a request still open past this fraction of the time from filing to its deadline is "at risk"
    # (flag on the request, count in /metrics)
    deadline_risk_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    # the deadline guarantee: the beat deletes the stored rows and profile of any open request whose
    # deadline is within this margin, even when unlearning has not run (pipeline.delete_data_due)
    deadline_delete_margin_hours: float = Field(default=24.0, ge=0.0)
    batch_size: int = 8  # a batch forms when this many requests wait ...
    batch_max_wait_seconds: float = 300.0  # ... or the oldest has waited this long
    batch_poll_seconds: float = 15.0  # how often the beat task looks for batches and expired leases
    lease_seconds: float = 120.0  # a job whose lease is not renewed for this long is taken up again
    max_retries: int = 3  # failed gates before the batch goes to the exact fallback
    # infrastructure errors (database unreachable, disk full) retry the job without spending the gate
    # budget: after job_retry_delay_seconds, doubling up to job_retry_max_delay_seconds, at most
    # job_max_attempts tries of one job; then it fails like a failed gate
    job_max_attempts: int = Field(default=6, ge=1)
    job_retry_delay_seconds: float = Field(default=30.0, ge=0.0)
    job_retry_max_delay_seconds: float = Field(default=900.0, ge=0.0)

    # ------------------------------------------------------------------ unlearning and verification
    unlearning_method: str = "e2urec"
    unlearning_config: dict[str, Any] = Field(default_factory=dict)  # the method's hyper-parameters (JSON)
    # DESIGN "The method" step 6: when a batch has used up its retries, retrain an adapter from the base on
    # all training data not erased (method "retrain"), verify and promote it like any other child.  If that
    # fails too, the data is deleted all the same and the request ends "not_unlearned".
    exact_fallback: bool = True
    exact_fallback_config: dict[str, Any] = Field(default_factory=dict)  # RetrainConfig JSON; "train"
    # defaults to the recipe adapter v1 was trained with
    # verification on evidence (core.ml.evidence.EvidenceConfig, core.ml.verification.VerificationSizes)
    verify_valid_samples: int = 256  # fixed held-out validation subset for the utility check
    verify_max_samples: int = 512  # cap on the forget samples scored
    verify_reference_users: int = 40  # users held out of training that calibrate the memorisation test
    verify_reference_samples: int = 20  # ... with at most this many samples each
    verify_alpha: float = 0.05  # level of every test; intervals at 1 - alpha
    verify_power: float = 0.8  # power at which minimum detectable effects are stated
    verify_effect_of_interest: float = 0.1  # memorisation (nats) the verifier promises to see
    utility_margin: float = 0.02  # AUC the child may lose against the parent (interval's lower bound)

    # ------------------------------------------------------------------ webhooks (core/services/webhooks.py)
    # one receiver for the deployment, told when an erasure request completes or ends not_unlearned, in the
    # Standard Webhooks format signed with ``webhook_secret`` (``whsec_`` + base64 of >= 24 random bytes)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_max_attempts: int = Field(default=8, ge=1)

    @property
    def webhooks(self) -> WebhookConfig | None:
        """The webhook receiver, or None when none is configured."""
        if self.webhook_url is None or self.webhook_secret is None:
            return None
        return WebhookConfig(self.webhook_url, self.webhook_secret, max_attempts=self.webhook_max_attempts)

    @model_validator(mode="after")
    def _check_webhooks(self) -> Settings:
        if (self.webhook_url is None) != (self.webhook_secret is None):
            raise ValueError("E2U_WEBHOOK_URL and E2U_WEBHOOK_SECRET are set together or not at all")
        if self.webhook_secret is not None:
            try:
                signer(self.webhook_secret)
            except WebhookSecretError as error:
                raise ValueError(f"E2U_WEBHOOK_SECRET: {error}") from None
        return self

    @property
    def database_url_resolved(self) -> str:
        if not self.database_url:
            return f"sqlite:///{(self.home / 'e2u.sqlite').resolve()}"
        if self.database_password is None:
            return self.database_url
        url = make_url(self.database_url).set(password=self.database_password.get_secret_value())
        return url.render_as_string(hide_password=False)

    @property
    def broker_url_resolved(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def result_backend_resolved(self) -> str:
        return self.result_backend or f"file://{(self.home / 'celery' / 'results').resolve()}"

    @model_validator(mode="after")
    def _refuse_missing_secrets(self) -> Settings:
        if not self.certificate_salt.strip():
            raise ValueError("E2U_CERTIFICATE_SALT must not be empty")
        if self.environment == "development":
            return self
        if self.certificate_salt == DEV_CERTIFICATE_SALT:
            raise ValueError("E2U_CERTIFICATE_SALT must be set to a secret of your own in production")
        if self.signing_key_file is None:
            raise ValueError(
                "E2U_SIGNING_KEY_FILE must name the Ed25519 signing key (PKCS#8 PEM) in production; "
                "make one with `openssl genpkey -algorithm ed25519 -out signing-key.pem`"
            )
        try:
            SigningKey.load(self.signing_key_file)
        except SignatureError as error:
            raise ValueError(f"E2U_SIGNING_KEY_FILE: {error}") from None
        if self.data_kek_file is None:
            raise ValueError(
                "E2U_DATA_KEK_FILE must name the key-encryption key of the stored ratings in production; "
                "make one with `e2u keys create-kek PATH`"
            )
        try:
            self.keyring()
        except DataKeyError as error:
            raise ValueError(f"E2U_DATA_KEK_FILE: {error}") from None
        return self
