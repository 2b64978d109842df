"""The job spec: one JSON document that says what to compute.

Pure pydantic, no torch: the API validates requests with these very models, the
local runner (`trajx run`) and the worker execute them. Artifact references are
strings: on the service they are artifact ids (`art_...`), for the local runner
file paths (relative to the spec file).

A spec carries a `kind`; each kind has its own model, a `JobSpecBase` registered with
`register_job_kind`, so adding `average` or `align` is one model and one executor
(`trajx.executors.register_executor`), not a new API. The API and the worker only call
the methods of `JobSpecBase`; they read no field of a kind by name.
"""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trajx.arch_configs import check_builtin_config
from trajx.errors import InvalidInput
from trajx.input_checks import Tables, check_checkpoints_agree, check_data, check_permutation_spec

ArtifactRef = Annotated[str, Field(min_length=1, max_length=4096)]
InputKind = Literal["checkpoint", "data", "program"]
ARCH_PROGRAM = "arch.program"  # where a spec names an uploaded model program
Queue = Literal["gpu", "cpu"]


class _Strict(BaseModel):
    # Unknown fields are a typo in a user's spec: refuse them instead of ignoring them.
    # Strict types: "10", 10.0 and true are not integers; NaN and Infinity are not numbers.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Architecture(_Strict):
    """A zoo, plug-in or Hugging Face architecture by name and constructor config, or a
    model program the user exported with `trajx export` (docs/bring-your-own-model.md)."""

    name: str | None = Field(default=None, min_length=1, max_length=100, examples=["mlp"])
    config: dict[str, Any] = Field(default_factory=dict, examples=[{"in_features": 64}])
    program: ArtifactRef | None = Field(default=None, description="an uploaded model program")

    @model_validator(mode="after")
    def _name_or_program(self) -> "Architecture":
        if (self.name is None) == (self.program is None):
            raise ValueError("an architecture needs exactly one of 'name' or 'program'")
        if self.program is not None and self.config:
            raise ValueError("a program carries its own configuration: give no 'config' with it")
        return self

    def artifact_refs(self) -> dict[str, ArtifactRef]:
        return {ARCH_PROGRAM: self.program} if self.program is not None else {}

    def check(self) -> None:
        if self.name is not None:
            check_builtin_config(self.name, self.config)

    def label(self) -> str:
        """How listings show it: the architecture's name, or `program`."""
        return self.name if self.name is not None else "program"


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


class JobSpecBase(_Strict):
    """What the API and the worker ask of every job kind's spec model.

    A subclass declares `kind: Literal["name"] = "name"` and implements `artifact_refs`
    and `input_kind`; the other methods have defaults.
    """

    kind: str

    def artifact_refs(self) -> dict[str, ArtifactRef]:
        """Every artifact this job reads, keyed by its location in the spec (`source[0]`)."""
        raise NotImplementedError

    def input_kind(self, location: str) -> InputKind:
        """What the artifact at `location` must be: a `checkpoint` or a `data` shard."""
        raise NotImplementedError

    def check(self) -> None:
        """Checks beyond the fields' types (run by `parse_job_spec`); InvalidInput naming the field."""

    def check_input_tensors(self, table: Tables) -> None:
        """Check the inputs' tensor tables (`table(location)` -> {name: shape}, read on
        demand) agree with each other and the spec; InvalidInput naming location, artifact
        and tensor."""

    def queue(self) -> Queue:
        """The worker queue this job belongs on (chosen once, when the job is created)."""
        return "gpu"

    def summary_fields(self) -> dict[str, Any]:
        """A few JSON values that tell jobs of this kind apart in a listing."""
        return {}


class TransferJob(JobSpecBase):
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

    DATA_LOCATIONS: ClassVar[tuple[str, ...]] = ("train_data", "eval_data")

    def artifact_refs(self) -> dict[str, ArtifactRef]:
        refs: dict[str, ArtifactRef] = {f"source[{i}]": r for i, r in enumerate(self.source)}
        for i, target in enumerate(self.targets):
            if target.checkpoint is not None:
                refs[f"targets[{i}].checkpoint"] = target.checkpoint
            if target.trained is not None:
                refs[f"targets[{i}].trained"] = target.trained
        refs["train_data"] = self.train_data
        if self.eval_data is not None:
            refs["eval_data"] = self.eval_data
        return {**refs, **self.arch.artifact_refs()}

    def input_kind(self, location: str) -> InputKind:
        if location == ARCH_PROGRAM:
            return "program"
        return "data" if location in self.DATA_LOCATIONS else "checkpoint"

    def check(self) -> None:
        self.arch.check()
        if self.arch.program is not None:
            seeded = [i for i, target in enumerate(self.targets) if target.seed is not None]
            if seeded:
                raise InvalidInput(
                    f"targets[{seeded[0]}].seed: a model program has no initializer on the service; "
                    "give the target as a checkpoint (trajx export --seed N writes one)",
                    code="invalid_value", field=f"targets[{seeded[0]}].seed")

    def check_input_tensors(self, table: Tables) -> None:
        refs = self.artifact_refs()
        check_checkpoints_agree({loc: ref for loc, ref in refs.items() if self.input_kind(loc) == "checkpoint"},
                                table)
        check_data({loc: ref for loc, ref in refs.items() if self.input_kind(loc) == "data"}, table)
        if self.permutation_spec:
            check_permutation_spec(self.permutation_spec, table("source[0]"))

    def queue(self) -> Queue:
        # A job pinned to the CPU must not wait for (or occupy) a GPU worker.
        return "cpu" if self.params.device == "cpu" else "gpu"

    def summary_fields(self) -> dict[str, Any]:
        return {"method": self.method, "arch": self.arch.label(), "targets": len(self.targets)}


# kind -> spec model. `average` and `align` join through `register_job_kind`.
JOB_KINDS: dict[str, type[JobSpecBase]] = {}


def register_job_kind(model: type[JobSpecBase]) -> type[JobSpecBase]:
    """Add `model` to JOB_KINDS under the default of its `kind` field (usable as a decorator)."""
    JOB_KINDS[model.model_fields["kind"].default] = model
    return model


register_job_kind(TransferJob)


def parse_job_spec(data: Any) -> JobSpecBase:
    """Validate a job spec document of any registered kind (`kind` defaults to "transfer").

    An unknown `kind` is an InvalidInput naming it. Pydantic's ValidationError is raised
    for any other problem, with locations relative to the spec (the API turns them into
    problem+json naming each field).
    """
    kind = data.get("kind", "transfer") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in JOB_KINDS:  # a list or dict is unhashable
        raise InvalidInput(
            f"unknown job kind {kind!r}; known kinds: {sorted(JOB_KINDS)}",
            code="unknown_kind",
            field="kind",
        )
    # The tag picks the model (a discriminated union whose errors carry no tag in their loc).
    spec = JOB_KINDS[kind].model_validate(data)
    spec.check()
    return spec
