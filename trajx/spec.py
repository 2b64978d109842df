"""The job spec: one JSON document that says what to compute.

Pure pydantic, no torch: the API validates requests with these very models, the
local runner (`trajx run`) and the worker execute them. Artifact references are
strings: on the service they are artifact ids (`art_...`), for the local runner
file paths (relative to the spec file).

A spec carries a `kind`; each kind has its own model in `JOB_KINDS`, so adding
`average` or `align` is one model and one executor, not a new API.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from trajx.errors import InvalidInput

ArtifactRef = Annotated[str, Field(min_length=1, max_length=4096)]


class _Strict(BaseModel):
    # Unknown fields are a typo in a user's spec: refuse them instead of ignoring them.
    # Strict types: "10", 10.0 and true are not integers; NaN and Infinity are not numbers.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Architecture(_Strict):
    """A model-zoo (or plug-in) architecture name and its constructor config."""

    name: str = Field(min_length=1, max_length=100, examples=["mlp"])
    config: dict[str, Any] = Field(default_factory=dict, examples=[{"in_features": 64}])


class Target(_Strict):
    """One target initialization: an uploaded checkpoint or a seed for the zoo's init.

    `trained` is the target trained for real; only the `oracle` method uses it.
    """

    checkpoint: ArtifactRef | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    trained: ArtifactRef | None = None

    @model_validator(mode="after")
    def _exactly_one_init(self) -> "Target":
        if (self.checkpoint is None) == (self.seed is None):
            raise ValueError("a target needs exactly one of 'checkpoint' or 'seed'")
        return self


class MatchingParams(_Strict):
    """Weight-matching solver controls (coordinate descent over permutation groups)."""

    max_iter: int = Field(default=100, ge=1, le=10_000)
    tol: float = Field(default=1e-7, ge=0.0, le=1.0, description="relative improvement to stop")
    solver: Literal["auto", "scipy", "lapx"] = "auto"


class TransferParams(_Strict):
    """Parameters of a transfer run. Defaults follow the paper's FGMT setup."""

    steps: int = Field(default=30, ge=1, le=1000, description="T: points on the trajectory")
    schedule: Literal["uniform", "cosine"] = "cosine"
    batch_size: int = Field(default=128, ge=1, le=65_536)
    grad_batches: int = Field(default=1, ge=1, le=1000, description="G: batches per gradient")
    bn_batches: int = Field(default=5, ge=1, le=1000, description="batches to re-estimate BN stats")
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    matching: MatchingParams = Field(default_factory=MatchingParams)
    pair_device: Literal["auto", "cpu"] = Field(
        default="auto", description="where FGMT keeps its gradient pairs"
    )
    pair_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"


class Outputs(_Strict):
    """What to keep besides the last and best checkpoints and the metrics report."""

    permutations: bool = True
    trajectory: bool = False


class TransferJob(_Strict):
    """Transfer a source trajectory onto one or more target initializations."""

    kind: Literal["transfer"] = "transfer"
    method: Literal["fgmt", "gmt", "naive", "oracle"] = "fgmt"
    arch: Architecture
    source: list[ArtifactRef] = Field(
        min_length=2, max_length=1000, description="checkpoints θ₁⁰ … θ₁ᵀ; the first is the init"
    )
    targets: list[Target] = Field(min_length=1, max_length=64)
    train_data: ArtifactRef
    eval_data: ArtifactRef | None = None
    params: TransferParams = Field(default_factory=TransferParams)
    outputs: Outputs = Field(default_factory=Outputs)
    permutation_spec: dict[str, list[str | None]] | None = Field(
        default=None,
        description="explicit spec: parameter name -> permutation group per axis (null = fixed); "
        "overrides or completes the derived one",
    )

    @model_validator(mode="after")
    def _oracle_needs_trained_targets(self) -> "TransferJob":
        if self.method == "oracle":
            missing = [i for i, t in enumerate(self.targets) if t.trained is None]
            if missing:
                raise ValueError(f"method 'oracle' needs 'trained' on every target; missing: {missing}")
        return self

    def artifact_refs(self) -> dict[str, ArtifactRef]:
        """Every artifact this job reads, keyed by its location in the spec (for errors)."""
        refs: dict[str, ArtifactRef] = {f"source[{i}]": r for i, r in enumerate(self.source)}
        for i, target in enumerate(self.targets):
            if target.checkpoint is not None:
                refs[f"targets[{i}].checkpoint"] = target.checkpoint
            if target.trained is not None:
                refs[f"targets[{i}].trained"] = target.trained
        refs["train_data"] = self.train_data
        if self.eval_data is not None:
            refs["eval_data"] = self.eval_data
        return refs


# kind -> spec model. `average` and `align` join here.
JOB_KINDS: dict[str, type[_Strict]] = {"transfer": TransferJob}

JobSpec = TransferJob  # widen to an Annotated union on `kind` when a second kind lands

_job_spec_adapter: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)


def parse_job_spec(data: Any) -> JobSpec:
    """Validate a job spec document; an unknown `kind` is an InvalidInput naming it.

    Pydantic's ValidationError is raised for any other problem (the API turns its
    errors into problem+json naming each field).
    """
    kind = data.get("kind", "transfer") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in JOB_KINDS:  # a list or dict is unhashable
        raise InvalidInput(
            f"unknown job kind {kind!r}; known kinds: {sorted(JOB_KINDS)}",
            code="unknown_kind",
            field="kind",
        )
    return _job_spec_adapter.validate_python(data)
