"""Check a job spec's artifact references before a job is queued.

Every ref must be a live artifact of the caller's tenant with the right role, and
the checkpoints must agree tensor by tensor, so a mismatch costs an HTTP 422 and
not a worker's GPU time. Errors name the spec field, the artifact and the tensor.
"""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from app.models import ARTIFACT_ID_PREFIX, Artifact, is_id
from app.problems import ProblemError

# Result checkpoints (a previous job's `last`/`best`) may seed another transfer.
CHECKPOINT_KINDS = ("checkpoint", "result")
DATA_KIND = "data"


def _role(field: str) -> str:
    return DATA_KIND if field in ("train_data", "eval_data") else "checkpoint"


def resolve_inputs(session: Session, tenant_id: str, refs: dict[str, str]) -> dict[str, Artifact]:
    """Map each spec field (`source[0]`, `train_data`, ...) to its artifact; 422 problems on failure."""
    ids = {ref for ref in refs.values() if is_id(ref, ARTIFACT_ID_PREFIX)}  # others cannot exist
    # Tensor tables load one at a time when compared (a spec may name 1000 big checkpoints).
    found = {a.id: a for a in session.scalars(
        select(Artifact).options(defer(Artifact.tensors)).where(
            Artifact.id.in_(ids), Artifact.tenant_id == tenant_id, Artifact.deleted_at.is_(None)))}
    missing = [{"field": f"spec.{field}", "artifact": ref, "message": f"no artifact with id {ref!r}"}
               for field, ref in refs.items() if ref not in found]
    if missing:
        raise ProblemError(422, "artifact_not_found",
                           f"{len(missing)} referenced artifact(s) do not exist: "
                           + ", ".join(m["field"] for m in missing), errors=missing)
    inputs = {field: found[ref] for field, ref in refs.items()}
    wrong = [_kind_error(field, artifact) for field, artifact in inputs.items()
             if not _has_role(artifact, _role(field))]
    if wrong:
        raise ProblemError(422, "wrong_artifact_kind", "; ".join(w["message"] for w in wrong), errors=wrong)
    _check_checkpoints_agree(session, {f: a for f, a in inputs.items() if _role(f) == "checkpoint"})
    _check_data({f: a for f, a in inputs.items() if _role(f) == DATA_KIND})
    return inputs


def _has_role(artifact: Artifact, role: str) -> bool:
    if artifact.format != "safetensors":
        return False
    return artifact.kind == DATA_KIND if role == DATA_KIND else artifact.kind in CHECKPOINT_KINDS


def _kind_error(field: str, artifact: Artifact) -> dict[str, Any]:
    wanted = "a safetensors data shard (tensors 'inputs' and 'targets')" if _role(field) == DATA_KIND \
        else "a safetensors checkpoint"
    return {"field": f"spec.{field}", "artifact": artifact.id,
            "message": f"spec.{field}: {artifact.id} is a {artifact.format} {artifact.kind} artifact, "
                       f"expected {wanted}"}


def _shapes(artifact: Artifact) -> dict[str, list[int]]:
    return {t["name"]: t["shape"] for t in artifact.tensors}


def _check_checkpoints_agree(session: Session, checkpoints: dict[str, Artifact]) -> None:
    """Every checkpoint has the tensor names and shapes of `source[0]`: one pass over each
    distinct artifact's table, so the work is linear in the distinct tables, not the refs."""
    reference_field, reference = next(iter(checkpoints.items()))
    expected = _shapes(reference)
    checked = {reference.id}  # a spec may name one artifact many times: compare each once
    for field, artifact in checkpoints.items():
        if artifact.id in checked:
            continue
        checked.add(artifact.id)
        shapes = _shapes(artifact)
        session.expire(artifact, ["tensors"])  # memory for one table at a time
        if shapes == expected:
            continue
        for name in sorted(expected.keys() | shapes.keys()):
            mine, theirs = shapes.get(name), expected.get(name)
            if mine == theirs:
                continue
            if mine is None:
                message = f"spec.{field} ({artifact.id}) lacks tensor {name!r} that spec.{reference_field} has"
            elif theirs is None:
                message = f"spec.{field} ({artifact.id}) has tensor {name!r} that spec.{reference_field} lacks"
            else:
                message = (f"tensor {name!r} has shape {mine} in spec.{field} ({artifact.id}) but "
                           f"{theirs} in spec.{reference_field} ({reference.id})")
            raise ProblemError(422, "checkpoint_mismatch", message,
                               errors=[{"field": f"spec.{field}", "artifact": artifact.id, "tensor": name,
                                        "message": message}])


def _check_data(shards: dict[str, Artifact]) -> None:
    """inputs and targets hold the same number of examples; eval inputs look like train inputs."""
    feature_shapes = {}
    for field, artifact in shards.items():
        shapes = _shapes(artifact)
        inputs, targets = shapes["inputs"], shapes["targets"]
        if not inputs or not targets or inputs[0] != targets[0]:
            message = (f"spec.{field} ({artifact.id}): 'inputs' {inputs} and 'targets' {targets} "
                       "must have the same leading (example) dimension")
            raise ProblemError(422, "data_mismatch", message, errors=[
                {"field": f"spec.{field}", "artifact": artifact.id, "tensor": "inputs", "message": message}])
        feature_shapes[field] = inputs[1:]
    if len(set(map(tuple, feature_shapes.values()))) > 1:
        message = f"eval_data inputs have example shape {feature_shapes['eval_data']}, train_data " \
                  f"{feature_shapes['train_data']}"
        raise ProblemError(422, "data_mismatch", message, errors=[
            {"field": "spec.eval_data", "tensor": "inputs", "message": message}])


def check_permutation_spec(permutation_spec: dict[str, list[str | None]] | None, source: Artifact) -> None:
    """An explicit permutation spec names tensors of the checkpoints, one entry per axis."""
    if not permutation_spec:
        return
    shapes = _shapes(source)
    for name, axes in permutation_spec.items():
        field = f"spec.permutation_spec.{name}"
        if name not in shapes:
            message = f"{field}: the checkpoints have no tensor {name!r}"
        elif len(axes) != len(shapes[name]):
            message = f"{field}: names {len(axes)} axes but tensor {name!r} has shape {shapes[name]}"
        else:
            continue
        raise ProblemError(422, "permutation_spec_mismatch", message,
                           errors=[{"field": field, "tensor": name, "message": message}])
