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

import math
from itertools import pairwise
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trajx.arch_configs import check_builtin_config
from trajx.errors import InvalidInput
from trajx.input_checks import Tables, check_checkpoints_agree, check_data, check_permutation_spec
from trajx.method_registry import (
    DEFAULT_METHOD,
    TRANSFER_METHODS,
    TransferMethodName,
    describe_methods,
)
from trajx.readable_errors import did_you_mean

ArtifactRef = Annotated[str, Field(min_length=1, max_length=4096)]
InputKind = Literal["checkpoint", "data", "program"]
ARCH_PROGRAM = "arch.program"  # where a spec names an uploaded model program
Queue = Literal["gpu", "cpu"]
PairWeighting = Literal["none", "unit"]  # what a transfer runs with, "auto" resolved


def _exactly_one(model: BaseModel, who: str, first: str, second: str) -> None:
    """ValueError unless exactly one of the fields `first` and `second` of `model` is set."""
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        raise ValueError(f"{who} needs exactly one of {first!r} or {second!r}")


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
        _exactly_one(self, "an architecture", "name", "program")
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

    `trained` is the target trained for real; only methods that declare it use it
    (`trajx.method_registry`: oracle).
    """

    checkpoint: ArtifactRef | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    trained: ArtifactRef | None = None

    @model_validator(mode="after")
    def _exactly_one_init(self) -> "Target":
        _exactly_one(self, "a target", "checkpoint", "seed")
        return self


class MatchingParams(_Strict):
    """Weight-matching solver controls (coordinate descent over permutation groups)."""

    max_iter: int = Field(default=100, ge=1, le=10_000)
    tol: float = Field(default=1e-7, ge=0.0, le=1.0, description="relative improvement to stop")
    step_sweeps: int | None = Field(default=None, ge=1, le=10_000, description=(
        "transfer: sweeps per step after the first (null: until converged, as the first); 2 is "
        "faster, within noise on MLPs and CNNs (docs/scale.md)"))
    solver: Literal["auto", "jv", "scipy", "lapx"] = "auto"


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
    pair_weighting: Literal["auto", "none", "unit"] = Field(
        default="auto", description=(
            "'unit': every gradient pair scaled to unit norms (sums of cosines); 'none': raw pairs, "
            "as published; 'auto': 'unit' when every target is a pre-trained checkpoint (not a seed, "
            "nor a file trajx init/export drew), else 'none'; the result summary names the one used"))


class LastSteps(_Strict):
    """The newest `last` points of a sequence (transferred steps, checkpoints)."""

    last: int = Field(ge=1, le=1000)


class Outputs(_Strict):
    """What to keep besides the last and best checkpoints and the metrics report.

    `average`: also return the uniform average of the last k transferred steps
    (BatchNorm re-estimated), evaluated like the other results. `partial_on_stop`: a job
    cancelled, timed out or failed after some steps still returns the last and best steps
    it completed, marked partial (within the tenant's storage quota).
    """

    permutations: bool = True
    trajectory: bool = False
    average: LastSteps | None = None
    partial_on_stop: bool = True


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


class _ArchitectureJob(JobSpecBase):
    """Jobs on checkpoints of one architecture (`arch`, a name or an uploaded program) with
    `train_data`/`eval_data` shards and a `params.device`: transfer, average and align."""

    DATA_LOCATIONS: ClassVar[tuple[str, ...]] = ("train_data", "eval_data")

    def input_kind(self, location: str) -> InputKind:
        if location == ARCH_PROGRAM:
            return "program"
        return "data" if location in self.DATA_LOCATIONS else "checkpoint"

    def check(self) -> None:
        self.arch.check()

    def check_input_tensors(self, table: Tables) -> None:
        """Every checkpoint has the first one's tensors (a mixed list is `checkpoint_mismatch`
        naming the odd one), the data shards agree, an explicit spec fits the checkpoints."""
        refs = self.artifact_refs()
        checkpoints = {loc: ref for loc, ref in refs.items() if self.input_kind(loc) == "checkpoint"}
        check_checkpoints_agree(checkpoints, table)
        check_data({loc: ref for loc, ref in refs.items() if self.input_kind(loc) == "data"}, table)
        explicit = getattr(self, "permutation_spec", None)
        if explicit:
            check_permutation_spec(explicit, table(next(iter(checkpoints))))

    def queue(self) -> Queue:
        # A job pinned to the CPU must not wait for (or occupy) a GPU worker.
        return "cpu" if self.params.device == "cpu" else "gpu"


class TransferJob(_ArchitectureJob):
    """Transfer a source trajectory onto one or more target initializations."""

    kind: Literal["transfer"] = "transfer"
    method: TransferMethodName = Field(DEFAULT_METHOD, description=describe_methods())
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
    def _method_inputs_given(self) -> "TransferJob":
        for need in TRANSFER_METHODS[self.method].needs:  # e.g. oracle: each target's `trained`
            missing = [i for i, t in enumerate(self.targets) if getattr(t, need) is None]
            if missing:
                raise ValueError(f"method {self.method!r} needs {need!r} on every target; missing: {missing}")
        return self

    @model_validator(mode="after")
    def _average_fits_the_steps(self) -> "TransferJob":
        if self.outputs.average is not None and self.outputs.average.last > self.params.steps:
            raise ValueError(f"outputs.average.last is {self.outputs.average.last} but the transfer "
                             f"has only params.steps={self.params.steps} steps")
        return self

    def artifact_refs(self) -> dict[str, ArtifactRef]:
        # The source comes first: its first checkpoint is the one the others must match.
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

    def check(self) -> None:
        super().check()
        if self.arch.program is not None:
            seeded = [i for i, target in enumerate(self.targets) if target.seed is not None]
            if seeded:
                raise InvalidInput(
                    f"targets[{seeded[0]}].seed: a model program has no initializer on the service; "
                    "give the target as a checkpoint (trajx export --seed N writes one)",
                    code="invalid_value", field=f"targets[{seeded[0]}].seed")

    def summary_fields(self) -> dict[str, Any]:
        return {"method": self.method, "arch": self.arch.label(), "targets": len(self.targets)}


# Two re-estimations of one BN net (batches drawn with two seeds) differed by up to 0.5 points
# of digits accuracy at 5 or 20 x 128 samples, 0.25 (one digit) at 40 x 128 (bench_average, docs/jobs.md).
BN_BATCHES = 40


class RunParams(_Strict):
    """Data and device controls shared by averaging and alignment jobs."""

    batch_size: int = Field(default=128, ge=1, le=65_536, description="batch for BN re-estimation "
                            "and activations; evaluation uses 4x")
    bn_batches: int = Field(default=BN_BATCHES, ge=1, le=1000,
                            description="batches of train_data to re-estimate BN stats on")
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class UniformMethod(_Strict):
    """The plain mean of the newest `last` checkpoints, or of the newest `fraction` of them."""

    name: Literal["uniform"] = "uniform"
    last: int | None = Field(default=None, ge=1, le=1000)
    fraction: float | None = Field(default=None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_window(self) -> "UniformMethod":
        _exactly_one(self, "method 'uniform'", "last", "fraction")
        return self

    def window(self, count: int) -> int:
        """How many of `count` checkpoints enter (a fraction rounds up, at least one)."""
        return self.last if self.last is not None else max(1, math.ceil(self.fraction * count))


class LawaMethod(_Strict):
    """LAWA: the mean of `last` checkpoints `every` optimizer steps apart, ending at the newest."""

    name: Literal["lawa"] = "lawa"
    last: int = Field(ge=1, le=1000)
    every: int = Field(default=1, ge=1, le=1000)


class EmaMethod(_Strict):
    """Exponential moving average with decay β in (0, 1) per optimizer step, bias-corrected
    (as Adam's moments) unless told otherwise, optionally with a warm-up of β."""

    name: Literal["ema"] = "ema"
    decay: float = Field(gt=0.0, lt=1.0, description="β per optimizer step")
    warmup: bool = Field(default=False, description="decay of step t is min(β, (1+t)/(10+t))")
    bias_correction: bool = Field(default=True, description="start from zero and divide by 1 − Π β "
                                  "(else the first checkpoint starts the average and keeps Π β of it)")


AverageMethod = Annotated[UniformMethod | LawaMethod | EmaMethod, Field(discriminator="name")]


class Sweep(_Strict):
    """A grid to choose from on held-out data: windows `last` (uniform, lawa) or decays (ema)."""

    last: list[Annotated[int, Field(ge=1, le=1000)]] | None = Field(default=None, min_length=1, max_length=100)
    decay: list[Annotated[float, Field(gt=0.0, lt=1.0)]] | None = Field(default=None, min_length=1,
                                                                         max_length=100)

    @model_validator(mode="after")
    def _one_grid(self) -> "Sweep":
        _exactly_one(self, "a sweep", "last", "decay")
        return self


class AverageOutputs(_Strict):
    """`candidates`: keep every swept candidate's checkpoint, not only the best."""

    candidates: bool = False


class AverageJob(_ArchitectureJob):
    """Average checkpoints of one trajectory (uniform, LAWA, EMA), optionally sweeping a grid."""

    kind: Literal["average"] = "average"
    arch: Architecture
    checkpoints: list[ArtifactRef] = Field(min_length=2, max_length=1000,
                                           description="one trajectory, oldest first")
    steps: list[Annotated[int, Field(ge=0, le=10**12)]] | None = Field(
        default=None, max_length=1000, description="the optimizer step of each checkpoint (else read "
        "from their safetensors metadata 'step', else from names like step-0880, else positions)")
    train_data: ArtifactRef = Field(description="data BatchNorm statistics are re-estimated on")
    eval_data: ArtifactRef | None = Field(default=None, description="held-out data every candidate is scored on")
    select_data: ArtifactRef | None = Field(default=None, description="held-out data a sweep chooses on "
                                            "(eval_data if absent: then the best score is optimistic)")
    method: AverageMethod
    sweep: Sweep | None = None
    params: RunParams = Field(default_factory=RunParams)
    outputs: AverageOutputs = Field(default_factory=AverageOutputs)

    DATA_LOCATIONS: ClassVar[tuple[str, ...]] = ("train_data", "eval_data", "select_data")

    @model_validator(mode="after")
    def _fits_the_list(self) -> "AverageJob":
        count, method = len(self.checkpoints), self.method
        if self.steps is not None:
            if len(self.steps) != count:
                raise ValueError(f"steps: {len(self.steps)} steps for {count} checkpoints")
            for i, (before, after) in enumerate(pairwise(self.steps)):
                if after <= before:
                    raise ValueError(f"steps: must increase strictly; steps[{i}]={before}, steps[{i + 1}]={after}")
        lasts = [method.window(count)] if isinstance(method, UniformMethod) else []
        if isinstance(method, LawaMethod):
            lasts = [method.last]
        field = "sweep.last" if self.sweep is not None and self.sweep.last is not None else "method.last"
        if self.select_data is not None and self.sweep is None:
            raise ValueError("select_data: only a sweep chooses; give a sweep or drop select_data")
        if self.sweep is not None:
            if self.eval_data is None:
                raise ValueError("eval_data: a sweep chooses on held-out data; give eval_data")
            grid_field = "last" if self.sweep.last is not None else "decay"
            wanted = "decay" if isinstance(method, EmaMethod) else "last"
            if grid_field != wanted:
                raise ValueError(f"sweep.{grid_field}: method {method.name!r} sweeps '{wanted}'")
            if self.sweep.last is not None:
                lasts = self.sweep.last
        for last in lasts:
            if last > count:
                raise ValueError(f"{field}: a window of last={last} spans {last} "
                                 f"checkpoints but 'checkpoints' holds {count}")
        # LAWA's `every` counts optimizer steps, which may only be known from the files (the
        # executor checks them before any work); given here, they are checked here.
        if isinstance(method, LawaMethod) and self.steps is not None:
            for last in lasts:
                span = (last - 1) * method.every
                if span > self.steps[-1] - self.steps[0]:
                    raise ValueError(f"{field}: a window of last={last} every={method.every} spans {span} "
                                     f"steps but 'steps' run from {self.steps[0]} to {self.steps[-1]}")
        return self

    def artifact_refs(self) -> dict[str, ArtifactRef]:
        refs: dict[str, ArtifactRef] = {f"checkpoints[{i}]": r for i, r in enumerate(self.checkpoints)}
        return {**refs, **_data_refs(self), **self.arch.artifact_refs()}

    def summary_fields(self) -> dict[str, Any]:
        return {"method": self.method.name, "arch": self.arch.label(), "checkpoints": len(self.checkpoints),
                "sweep": self.sweep is not None}


def _data_refs(spec: _ArchitectureJob) -> dict[str, ArtifactRef]:
    """The data shards `spec` names, by field (`train_data`, `eval_data`, `select_data`)."""
    return {name: getattr(spec, name) for name in spec.DATA_LOCATIONS if getattr(spec, name, None) is not None}


Alphas = list[Annotated[float, Field(ge=0.0, le=1.0)]]
ALPHA_GRID = [i / 10 for i in range(11)]


def _check_alphas(alphas: list[float]) -> None:
    if alphas[0] != 0.0 or alphas[-1] != 1.0 or any(b <= a for a, b in pairwise(alphas)):
        raise ValueError("params.alphas: a barrier needs an increasing grid from 0.0 to 1.0, "
                         f"got {alphas}")


class AlignParams(RunParams):
    """Alignment controls; `activation_batches` batches of train_data feed activation matching;
    `alphas` is the interpolation grid the barriers are measured on."""

    activation_batches: int = Field(default=10, ge=1, le=1000)
    matching: MatchingParams = Field(default_factory=MatchingParams)
    alphas: Alphas = Field(default_factory=lambda: list(ALPHA_GRID), min_length=2, max_length=101)

    @model_validator(mode="after")
    def _a_grid_from_0_to_1(self) -> "AlignParams":
        _check_alphas(self.alphas)
        return self


class AlignOutputs(_Strict):
    """`merged`: also return the aligned midpoint ½(A + πB), BatchNorm re-estimated."""

    merged: bool = False


class AlignJob(_ArchitectureJob):
    """Permute model B onto model A and report the plain and aligned interpolation barriers."""

    kind: Literal["align"] = "align"
    arch: Architecture
    model_a: ArtifactRef
    model_b: ArtifactRef
    method: Literal["weights", "activations"] = "weights"
    train_data: ArtifactRef = Field(description="BatchNorm re-estimation and activation matching")
    eval_data: ArtifactRef | None = Field(default=None, description="barrier metrics (train_data if absent)")
    params: AlignParams = Field(default_factory=AlignParams)
    outputs: AlignOutputs = Field(default_factory=AlignOutputs)
    permutation_spec: dict[str, list[str | None]] | None = Field(
        default=None, description="explicit spec, as for transfer jobs")

    def artifact_refs(self) -> dict[str, ArtifactRef]:
        refs = {"model_a": self.model_a, "model_b": self.model_b}
        return {**refs, **_data_refs(self), **self.arch.artifact_refs()}

    def summary_fields(self) -> dict[str, Any]:
        return {"method": self.method, "arch": self.arch.label(), "merged": self.outputs.merged}


class MergeOutputs(_Strict):
    """`aligned`: also return every input permuted into the merge's frame."""

    aligned: bool = False


class MergeJob(_ArchitectureJob):
    """Merge N models: align them (onto one reference, or onto their running mean as Git
    Re-Basin's MergeMany), average them with uniform, custom or per-layer weights, optionally
    REPAIR the merged activations' statistics, or cook a greedy soup."""

    kind: Literal["merge"] = "merge"
    arch: Architecture
    models: list[ArtifactRef] = Field(min_length=2, max_length=64)
    align: Literal["reference", "mean", "none"] = Field(
        default="reference", description="reference: weight-match every model onto models[reference]; "
        "mean: MergeMany, each onto the mean of the others until no permutation changes; none: as given "
        "(fine-tunes of one pre-trained model)")
    reference: int = Field(default=0, ge=0, description="index into models (align: reference)")
    rounds: int = Field(default=10, ge=1, le=100, description="most MergeMany rounds (align: mean)")
    weights: list[Annotated[float, Field(ge=0.0, le=1e6)]] | None = Field(
        default=None, description="one weight per model, normalised to sum 1 (uniform if absent)")
    layer_weights: dict[Annotated[str, Field(min_length=1, max_length=500)],
                        list[Annotated[float, Field(ge=0.0, le=1e6)]]] = Field(
        default_factory=dict, max_length=1000,
        description="state-dict name prefix -> weights for the tensors under it (longest prefix wins)")
    repair: bool = Field(default=False, description="REPAIR: rescale each hidden layer's outputs to the "
                         "inputs' interpolated mean and std (for nets without BatchNorm)")
    soup: Literal["greedy"] | None = Field(
        default=None, description="greedy soup (Wortsman et al., 2022): rank the models on select_data, "
        "add each, best first, while the uniform soup does not score lower on select_data")
    train_data: ArtifactRef = Field(description="BatchNorm re-estimation and REPAIR statistics")
    eval_data: ArtifactRef = Field(description="the split every reported score is measured on")
    select_data: ArtifactRef | None = Field(default=None, description="the held-out split a soup ranks "
                                            "and chooses on (required by soup; never eval_data)")

    DATA_LOCATIONS: ClassVar[tuple[str, ...]] = ("train_data", "eval_data", "select_data")
    params: AlignParams = Field(default_factory=AlignParams)
    outputs: MergeOutputs = Field(default_factory=MergeOutputs)
    permutation_spec: dict[str, list[str | None]] | None = Field(
        default=None, description="explicit spec, as for transfer jobs")

    @model_validator(mode="after")
    def _weights_fit_the_models(self) -> "MergeJob":
        count = len(self.models)
        if self.reference >= count:
            raise ValueError(f"reference: {self.reference} is not an index into the {count} models")
        for field, weights in (("weights", self.weights), *((f"layer_weights.{k}", v)
                                                           for k, v in self.layer_weights.items())):
            if weights is not None and (len(weights) != count or sum(weights) <= 0):
                raise ValueError(f"{field}: needs one non-negative weight per model ({count}), not all "
                                 f"zero; got {weights}")
        if self.soup is not None:
            if self.weights is not None or self.layer_weights:
                raise ValueError("soup: a greedy soup weighs its ingredients uniformly; drop weights/layer_weights")
            if self.select_data is None:
                raise ValueError("select_data: a soup chooses on a held-out split other than eval_data; "
                                 "give select_data")
        return self

    def artifact_refs(self) -> dict[str, ArtifactRef]:
        refs: dict[str, ArtifactRef] = {f"models[{i}]": r for i, r in enumerate(self.models)}
        return {**refs, **_data_refs(self), **self.arch.artifact_refs()}

    def summary_fields(self) -> dict[str, Any]:
        return {"align": self.align, "arch": self.arch.label(), "models": len(self.models),
                "repair": self.repair, "soup": self.soup is not None}


# kind -> spec model. `average`, `align` and `merge` join through `register_job_kind`.
JOB_KINDS: dict[str, type[JobSpecBase]] = {}


def register_job_kind(model: type[JobSpecBase]) -> type[JobSpecBase]:
    """Add `model` to JOB_KINDS under the default of its `kind` field (usable as a decorator)."""
    JOB_KINDS[model.model_fields["kind"].default] = model
    return model


register_job_kind(TransferJob)
register_job_kind(AverageJob)
register_job_kind(AlignJob)
register_job_kind(MergeJob)


def parse_job_spec(data: Any) -> JobSpecBase:
    """Validate a job spec document of any registered kind (`kind` defaults to "transfer").

    An unknown `kind` is an InvalidInput naming it. Pydantic's ValidationError is raised
    for any other problem, with locations relative to the spec (the API turns them into
    problem+json naming each field).
    """
    kind = data.get("kind", "transfer") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in JOB_KINDS:  # a list or dict is unhashable
        hint = did_you_mean(kind, JOB_KINDS) if isinstance(kind, str) else ""
        raise InvalidInput(
            f"unknown job kind {kind!r}{hint}; known kinds: {sorted(JOB_KINDS)}",
            code="unknown_kind",
            field="kind",
        )
    # The tag picks the model (a discriminated union whose errors carry no tag in their loc).
    spec = JOB_KINDS[kind].model_validate(data)
    spec.check()
    return spec
