"""SQLAlchemy 2 typed ORM: the tables every process shares.

The database is the source of truth for jobs and artifacts; Celery and the embedded
runner only carry a job id. Table and column names are a contract with `worker/`.
Ids are `<prefix>_<32 hex>` whose first 12 hex digits are a millisecond timestamp,
so ordering by id is ordering by creation (cursor pagination relies on it).
"""

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
LIVE_JOB_STATUSES = ("queued", "running", "cancelling")
TERMINAL_JOB_STATUSES = ("succeeded", "failed", "cancelled")
ARTIFACT_ID_PREFIX, JOB_ID_PREFIX = "art", "job"
WEBHOOK_URL_MAX_LENGTH = 2048
JOB_NAME_MAX_LENGTH = 200
# A label is a short token (`baseline`, `sweep:lr`), so a filter can match it exactly.
JOB_LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:=/+-]{0,63}$"
JOB_MAX_LABELS = 20


def new_id(prefix: str) -> str:
    """A time-ordered id: `prefix_` + 12 hex of milliseconds + 20 random hex."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def id_pattern(prefix: str) -> str:
    """The regular expression every `new_id(prefix)` matches."""
    return rf"^{prefix}_[0-9a-f]{{32}}$"


def is_id(value: str, prefix: str) -> bool:
    """Whether `value` has the shape of a `prefix` id: anything else cannot exist, so is never queried."""
    return re.fullmatch(id_pattern(prefix), value) is not None


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    # Deterministic constraint names: Alembic can then alter them on both backends.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Artifact(Base):
    """One upload or job result. Identical bytes share one blob in the store."""

    __tablename__ = "artifacts"
    __table_args__ = (Index(None, "tenant_id", "deleted_at", "id"), Index(None, "tenant_id", "sha256"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id(ARTIFACT_ID_PREFIX))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    tensors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    producer_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "tenant_id", "status", "created_at"),
        Index(None, "status", "heartbeat_at"),
        # The job list: a tenant's jobs newest first (ids are time-ordered), of one status or all.
        Index(None, "tenant_id", "id"),
        Index(None, "tenant_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id(JOB_ID_PREFIX))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # What people call the job (editable; not part of the spec, so never of its results).
    name: Mapped[str | None] = mapped_column(String(JOB_NAME_MAX_LENGTH))
    labels: Mapped[list[str] | None] = mapped_column(JSON)
    # Chosen once, from the spec, when the job is created; every (re-)dispatch sends it there.
    queue: Mapped[str] = mapped_column(String(16), server_default="gpu")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    webhook_url: Mapped[str | None] = mapped_column(String(WEBHOOK_URL_MAX_LENGTH))
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON)
    webhook_secret: Mapped[str | None] = mapped_column(String(100))


class JobArtifact(Base):
    """An input a job reads, with its place in the spec (`source[0]`, `train_data`, ...)."""

    __tablename__ = "job_artifacts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(100), primary_key=True)


class JobEvent(Base):
    __tablename__ = "job_events"
    # (type, id): /metrics counts events of a few types without reading the others.
    __table_args__ = (Index(None, "job_id", "id"), Index(None, "type", "id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class JobStep(Base):
    """What a job recorded after one completed unit of its work (a transfer step), so that a
    later attempt continues after it instead of starting over. `state` is the executor's
    own encoding (a transfer's permutations as safetensors), `data` its JSON facts (the
    step's metrics). Written fenced by the claim; deleted when the job ends.
    """

    __tablename__ = "job_steps"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """A webhook message waiting to be delivered (the worker's durable outbox).

    A row is deleted once delivered or out of attempts (each attempt is also a `webhook`
    job event), so the table holds only pending messages.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IdempotencyKey(Base):
    """A create request already answered: a retry with the same key gets the same resource."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "key", "path"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
