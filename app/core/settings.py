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

    # Descriptions feed docs/reference.md (docs/generate.py).
    environment: Literal["development", "production"] = Field(
        "development", description="`production` refuses unsafe defaults (SQLite default URL, "
        "`dispatcher=none`, local key creation)")
    data_dir: Path = Field(Path("./var"), description="the embedded default's data directory (local key "
                           "file, worker lock); `trajx serve` also puts the database and artifacts there")
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL; `postgresql://...` uses psycopg 3")
    storage_dir: Path = Field(Path("./var/artifacts"), description="content-addressed artifact store (sha256 layout)")
    # Where blobs live (app.core.storage.store, docs/deploy.md).
    storage_backend: Literal["local", "s3"] = Field(
        "local", description="`local`: `storage_dir`; `s3`: an S3-compatible bucket (credentials from boto3's "
        "usual AWS_* chain), for workers on hosts without a shared disk")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint URL; unset: AWS itself")
    s3_bucket: str | None = Field(None, description="the bucket (required with `storage_backend=s3`)")
    s3_prefix: str = Field(default="trajx/", pattern=r"^([A-Za-z0-9._-]+/)*$",
                           description="key prefix inside the bucket")
    s3_region: str | None = Field(None, description="the bucket's region")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field("path", description="S3 addressing style")
    s3_part_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2, le=5 * 1024**3,
                               description="multipart upload part size (one part in memory per upload)")
    s3_timeout_seconds: float = Field(default=10.0, gt=0, description="connect and read timeout of S3 calls")
    s3_max_attempts: int = Field(default=3, ge=1, le=20, description="attempts of one S3 call (boto3 retries)")
    s3_presign_seconds: int = Field(default=0, ge=0, le=7 * 24 * 3600,
                                    description="> 0: downloads answer 307 to a presigned URL valid this long, "
                                    "instead of streaming")
    cache_dir: Path = Field(Path("./var/cache"), description="the S3 backend's local side: the workers' blob "
                            "cache (bounded, LRU) and scratch space")
    cache_max_bytes: int = Field(default=50 * 1024**3, ge=0, description="bound of the workers' blob cache")
    storage_retry_seconds: float = Field(default=120.0, ge=0, description="a worker retries an unreachable "
                                         "store this long before giving the job back")
    storage_min_free_bytes: int = Field(default=1024**3, ge=0, description="`/readyz` answers 503 "
                                        "`storage_full` below this much free space where uploads land")
    temp_sweep_seconds: float = Field(default=60.0, gt=0, description="how often the API sweeps what dead "
                                      "uploads left in its temp directory")
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker")
    dispatcher: Literal["embedded", "celery", "none"] = Field(
        "embedded", description="`embedded`: a worker process of the API; `celery`; `none`: run nothing (tests)")

    max_upload_bytes: int = Field(default=8 * 1024**3, ge=1, description="larger uploads are refused with 413 "
                                  "while streaming")
    # The reference safetensors implementation caps the header at 100 MB.
    max_header_bytes: int = Field(default=16 * 1024**2, ge=8, description="cap on a safetensors JSON header")
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="how often a running job heartbeats")
    stale_seconds: float = Field(default=60.0, gt=0, description="a running job silent this long is re-run")
    max_attempts: int = Field(default=3, ge=1, le=100, description="runs of one job before it fails with "
                              "`worker_lost`")
    job_time_limit_seconds: float = Field(default=24 * 3600.0, gt=0, description="a longer job fails with "
                                          "`time_limit_exceeded`")
    worker_threads: int | None = Field(default=None, ge=1, le=1024, description="torch threads per running "
                                       "job; unset: the worker's cores shared by its concurrent jobs")

    auth_cache_seconds: float = Field(default=10.0, ge=0, description="a revoked API key keeps working for "
                                      "at most this long (0: check every request)")
    # Hostile-input bounds (docs/api.md, "Limits").
    max_tensors_per_file: int = Field(default=10_000, ge=1, description="tensors in one safetensors file")
    max_tensor_name_length: int = Field(default=1024, ge=1, description="characters in a tensor name")
    max_json_depth: int = Field(default=32, ge=2, le=200, description="nesting of a JSON request body")
    tenant_max_running_jobs: int = Field(default=2, ge=1, description="per tenant")
    defer_seconds: float = Field(default=5.0, gt=0, le=3600, description="a queued job whose tenant is at its "
                                 "running-job limit is offered to a Celery worker again after this long")
    tenant_max_queued_jobs: int = Field(default=100, ge=1, description="per tenant")
    tenant_max_stored_bytes: int = Field(default=0, ge=0, description="per tenant; 0: no limit")
    webhook_allow_private: bool = Field(False, description="allow webhooks to loopback, private and "
                                        "link-local addresses (`trajx serve` does)")
    metrics_token: str | None = Field(default=None, min_length=16, description="when set, `/metrics` answers "
                                      "only `Authorization: Bearer <token>`")
    header_timeout_seconds: float = Field(default=10.0, gt=0, description="`trajx serve`: a request whose "
                                          "headers take longer is cut off")
    body_timeout_seconds: float = Field(default=30.0, gt=0, description="a request body chunk that takes "
                                        "longer is cut off")
    link_secret: str | None = Field(default=None, min_length=32, description="signs the short-lived download "
                                    "links the dashboard follows; set one value on every API process behind "
                                    "one address (unset: a random key per process)")

    auto_migrate: bool = Field(True, description="run Alembic migrations on start")
    create_local_key: bool = Field(True, description="create tenant `local` and its key file on first start")
    log_level: str = Field("INFO", description="Python log level")

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
            problems.append("TRAJX_CREATE_LOCAL_KEY must be false (create keys with `trajx admin create-key`)")
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
