"""Process settings from the environment (`TRAJX_` prefix), one object per process.

`get_settings()` caches the object built from the environment; tests build their
own `Settings(...)` and hand it to `app.main.create_app`.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/trajx.db"


class Settings(BaseSettings):
    """Everything the API process (and the worker, which reuses it) is configured by."""

    model_config = SettingsConfigDict(env_prefix="TRAJX_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("./var")
    database_url: str = DEFAULT_DATABASE_URL
    storage_dir: Path = Path("./var/artifacts")
    broker_url: str = "redis://127.0.0.1:6379/0"
    dispatcher: Literal["embedded", "celery", "none"] = "embedded"

    max_upload_bytes: int = Field(default=8 * 1024**3, ge=1)
    # The safetensors JSON header; the reference implementation caps it at 100 MB.
    max_header_bytes: int = Field(default=16 * 1024**2, ge=8)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    stale_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    # A job running longer fails with `time_limit_exceeded` (worker/).
    job_time_limit_seconds: float = Field(default=24 * 3600.0, gt=0)
    # torch threads per running job; default: the worker's cores shared by its concurrent jobs.
    worker_threads: int | None = Field(default=None, ge=1, le=1024)

    # A revoked API key keeps working for up to this long (app.core.tenancy.auth.KeyCache); 0 disables.
    auth_cache_seconds: float = Field(default=10.0, ge=0)
    # Hostile-input bounds (docs/api.md, "Limits").
    max_tensors_per_file: int = Field(default=10_000, ge=1)
    max_tensor_name_length: int = Field(default=1024, ge=1)
    max_json_depth: int = Field(default=32, ge=2, le=200)
    # Per tenant; 0 means no limit on stored bytes.
    tenant_max_running_jobs: int = Field(default=2, ge=1)
    tenant_max_queued_jobs: int = Field(default=100, ge=1)
    tenant_max_stored_bytes: int = Field(default=0, ge=0)
    # Webhooks to loopback, private, link-local... addresses; `trajx serve` allows them.
    webhook_allow_private: bool = False
    # When set, `/metrics` answers only `Authorization: Bearer <token>`.
    metrics_token: str | None = Field(default=None, min_length=16)
    # `trajx serve`: a request whose headers (or a body chunk) take longer is cut off.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)

    auto_migrate: bool = True
    create_local_key: bool = True
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _psycopg3_driver(cls, url: str) -> str:
        # Plain `postgresql://` would pick psycopg2, which is not installed.
        for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> "Settings":
        if self.environment == "development":
            return self
        problems = []
        if self.database_url == DEFAULT_DATABASE_URL:
            problems.append("TRAJX_DATABASE_URL must be set explicitly")
        if self.dispatcher == "none":
            problems.append("TRAJX_DISPATCHER=none would never run a job")
        if self.create_local_key:
            problems.append("TRAJX_CREATE_LOCAL_KEY must be false (create keys with `python -m app.core.tenancy.admin`)")
        if problems:
            raise ValueError(f"unsafe settings for environment {self.environment!r}: " + "; ".join(problems))
        return self

    @property
    def local_key_path(self) -> Path:
        """Where the embedded default writes its first-start API key."""
        return self.data_dir / "local-api-key"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
