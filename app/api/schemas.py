"""Request and response bodies of the HTTP API (the OpenAPI schema is built from these)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from app.core.jobs.outbox import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS
from app.core.persistence.models import (
    JOB_LABEL_PATTERN,
    JOB_MAX_LABELS,
    JOB_NAME_MAX_LENGTH,
    JOB_STATUSES,
    WEBHOOK_URL_MAX_LENGTH,
)
from app.core.validation.text import scrub_json, scrub_text

JobStatus = Literal[JOB_STATUSES]  # type: ignore[valid-type]
WebhookEvent = Literal[WEBHOOK_EVENTS]  # type: ignore[valid-type]
# Stored text as responses show it: a row written before today's input checks (or by a
# path they missed) must never make a response, let alone a listing, fail to encode.
ShownText = Annotated[str, AfterValidator(scrub_text)]
ShownJson = Annotated[dict[str, Any], AfterValidator(scrub_json)]
TENSORS_SHOWN = 100


class TensorInfo(BaseModel):
    name: ShownText
    dtype: str
    shape: list[int]


class ArtifactPublic(BaseModel):
    """An uploaded file or a job's result."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(examples=["art_0190f2c1a3b45f6e7d8c9b0a1f2e3d4c"])
    name: ShownText
    sha256: str
    size: int
    format: Literal["safetensors", "json", "other"]
    kind: Literal["checkpoint", "data", "program", "result", "other"]
    tensors: list[TensorInfo] = Field(description=f"the first {TENSORS_SHOWN} tensors in file order; "
                                      "`GET /v1/artifacts/{id}/tensors` pages through all of them")
    tensor_count: int = Field(description="how many tensors the file holds")
    producer_job_id: str | None
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _first_tensors_only(cls, data: Any) -> Any:
        # One response (and a listing of 200) stays small whatever a file holds.
        if not isinstance(data, dict):
            data = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        tensors = data.get("tensors") or []
        return {**data, "tensors": tensors[:TENSORS_SHOWN], "tensor_count": data.get("tensor_count", len(tensors))}


class DownloadLink(BaseModel):
    url: str = Field(description="path of a link that needs no `Authorization` header")
    expires_at: datetime


class TensorsPage(BaseModel):
    data: list[TensorInfo]
    next_offset: int | None = Field(description="pass as `offset` for the next page; null on the last")


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


def _printable_name(name: str | None) -> str | None:
    if name is not None and not name.isprintable():
        raise ValueError("a job name is printable text (no control characters)")
    return name


def _distinct(labels: list[str] | None) -> list[str] | None:
    return None if labels is None else list(dict.fromkeys(labels))


JobName = Annotated[str, Field(min_length=1, max_length=JOB_NAME_MAX_LENGTH, examples=["resnet20 seed 3 from v2"]),
                    AfterValidator(_printable_name)]
JobLabels = Annotated[list[Annotated[str, Field(pattern=JOB_LABEL_PATTERN)]],
                      Field(max_length=JOB_MAX_LABELS, examples=[["baseline", "lr:0.1"]]), AfterValidator(_distinct)]


class JobCreate(BaseModel):
    """`spec` is a job spec (see `trajx.job_spec`); artifact refs are artifact ids of the caller."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(examples=[{
        "kind": "transfer", "method": "fgmt", "arch": {"name": "mlp", "config": {}},
        "source": ["art_...", "art_..."], "targets": [{"seed": 1}], "train_data": "art_...",
    }])
    webhook: WebhookIn | None = None
    name: JobName | None = Field(default=None, description="what people call this run; editable, not part of the spec")
    labels: JobLabels = Field(default_factory=list, description="tokens to group and filter runs by")


class JobUpdate(BaseModel):
    """`PATCH /v1/jobs/{id}`: the fields sent change (null clears the name)."""

    model_config = ConfigDict(extra="forbid")

    name: JobName | None = None
    labels: JobLabels | None = None


class WebhookPublic(BaseModel):
    url: ShownText
    events: list[str]
    secret: str = Field(description="`whsec_...`: verify the webhook-signature header with it")


class Progress(BaseModel):
    step: int
    total: int


class JobError(BaseModel):
    code: str
    message: ShownText


class _JobFacts(BaseModel):
    """What a job's list row and its whole resource share."""

    id: str = Field(examples=["job_0190f2c1a3b45f6e7d8c9b0a1f2e3d4c"])
    kind: str
    name: ShownText | None = None
    labels: list[str] = Field(default_factory=list)
    status: JobStatus
    queue: str = Field(description="the worker queue (`gpu`, `cpu`), chosen from the spec at creation")
    progress: Progress
    attempts: int
    max_attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None
    summary: ShownJson | None


class JobPublic(_JobFacts):
    spec: ShownJson
    result: ShownJson | None = Field(
        description="`{files: [{role, target, path, sha256, size, metadata, artifact}], targets: "
                    "[{role: artifact id}], <job-wide role>: artifact id}`: the executor's result "
                    "manifest (`files`), grouped by target (a transfer: `last`, `best`, `permutations`, "
                    "`trajectory`, `metrics`; job-wide `report`)")
    webhook: WebhookPublic | None


class JobListItem(_JobFacts):
    """A job as a list shows it: everything but the full spec, the result manifest and the
    webhook (`GET /v1/jobs/{id}` has them); `spec` holds only its headline."""

    spec: ShownJson = Field(description="the spec's headline: `kind`, `method`, `arch` (`name` or `program`), "
                            "`targets` (a transfer's)")


class JobsPage(BaseModel):
    data: list[JobListItem]
    next_cursor: str | None


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    type: str
    created_at: datetime
    data: ShownJson


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
    storage_free_bytes: int | None = Field(None, description="free space where uploads land (none for S3)")


class WorkerPublic(BaseModel):
    id: ShownText
    alive: bool = Field(description="its latest heartbeat is younger than TRAJX_STALE_SECONDS")
    last_heartbeat: datetime | None
    running_jobs: int


class QueuedJobPublic(BaseModel):
    id: str
    name: ShownText | None
    kind: str
    created_at: datetime
    position: int = Field(description="1 = next of every tenant's queued jobs, in creation order")
    reason: str = Field(description="why it waits, as far as the database can tell")


class QueuePublic(BaseModel):
    workers: list[WorkerPublic] = Field(description="workers holding a job now (an idle worker leaves no record)")
    running_jobs: int
    max_running_jobs: int
    queued: list[QueuedJobPublic]


class UsagePublic(BaseModel):
    stored_bytes: int
    max_stored_bytes: int | None = Field(description="null: no quota")
    queued_jobs: int
    max_queued_jobs: int
