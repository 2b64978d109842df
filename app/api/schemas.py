"""Request and response bodies of the HTTP API (the OpenAPI schema is built from these)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from app.core.models import JOB_STATUSES, WEBHOOK_URL_MAX_LENGTH
from app.core.outbox import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS

JobStatus = Literal[JOB_STATUSES]  # type: ignore[valid-type]
WebhookEvent = Literal[WEBHOOK_EVENTS]  # type: ignore[valid-type]


class TensorInfo(BaseModel):
    name: str
    dtype: str
    shape: list[int]


class ArtifactPublic(BaseModel):
    """An uploaded file or a job's result."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(examples=["art_0190f2c1a3b45f6e7d8c9b0a1f2e3d4c"])
    name: str
    sha256: str
    size: int
    format: Literal["safetensors", "json", "other"]
    kind: Literal["checkpoint", "data", "result", "other"]
    tensors: list[TensorInfo]
    producer_job_id: str | None
    created_at: datetime


class ArtifactsPage(BaseModel):
    data: list[ArtifactPublic]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="http(s) URL that receives signed POSTs (Standard Webhooks); "
                                        f"at most {WEBHOOK_URL_MAX_LENGTH} characters once normalised")
    events: list[WebhookEvent] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS), min_length=1)

    @field_validator("url", mode="before")
    @classmethod
    def _refuse_control_characters(cls, value: Any) -> Any:
        # URL parsing would silently drop a NUL, tab or newline: the stored URL would differ.
        if isinstance(value, str) and not value.isprintable():
            raise ValueError("the URL contains control characters")
        return value

    @field_validator("url")
    @classmethod
    def _fit_the_column(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        # Checked after normalisation: percent-encoding can make a URL longer than it was sent.
        if len(str(url)) > WEBHOOK_URL_MAX_LENGTH:
            raise ValueError(f"the URL is longer than {WEBHOOK_URL_MAX_LENGTH} characters")
        return url


class JobCreate(BaseModel):
    """`spec` is a job spec (see `trajx.spec`); artifact refs are artifact ids of the caller."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(examples=[{
        "kind": "transfer", "method": "fgmt", "arch": {"name": "mlp", "config": {}},
        "source": ["art_...", "art_..."], "targets": [{"seed": 1}], "train_data": "art_...",
    }])
    webhook: WebhookIn | None = None


class WebhookPublic(BaseModel):
    url: str
    events: list[str]
    secret: str = Field(description="`whsec_...`: verify the webhook-signature header with it")


class Progress(BaseModel):
    step: int
    total: int


class JobError(BaseModel):
    code: str
    message: str


class JobPublic(BaseModel):
    id: str = Field(examples=["job_0190f2c1a3b45f6e7d8c9b0a1f2e3d4c"])
    kind: str
    status: JobStatus
    spec: dict[str, Any]
    queue: str = Field(description="the worker queue (`gpu`, `cpu`), chosen from the spec at creation")
    progress: Progress
    attempts: int
    max_attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None
    result: dict[str, Any] | None = Field(
        description="`{files: [{role, target, path, sha256, size, metadata, artifact}], targets: "
                    "[{role: artifact id}], <job-wide role>: artifact id}`: the executor's result "
                    "manifest (`files`), grouped by target (a transfer: `last`, `best`, `permutations`, "
                    "`trajectory`, `metrics`; job-wide `report`)")
    summary: dict[str, Any] | None
    webhook: WebhookPublic | None


class JobsPage(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    type: str
    created_at: datetime
    data: dict[str, Any]


class EventsPage(BaseModel):
    data: list[EventPublic]
    next_cursor: str | None = Field(description="null once no more events exist now; to follow a job, "
                                       "poll again with the id of the last event seen as `cursor`")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: Literal["ok"]
    storage: Literal["ok"]
