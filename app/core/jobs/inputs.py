"""Check a job spec's artifact references before a job is queued.

Every ref must be a live artifact of the caller's tenant of the kind the spec asks
for, and the spec's kind checks the recorded tensor tables (trajx.input_checks), so a
mismatch costs an HTTP 422 and not a worker's GPU time. Errors name the spec field,
the artifact and the tensor.
"""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from app.core.errors import located_in
from app.core.persistence.models import ARTIFACT_ID_PREFIX, Artifact, is_id
from trajx.errors import InvalidInput
from trajx.job_spec import InputKind, JobSpecBase

# Result checkpoints (a previous job's `last`/`best`) may seed another transfer.
CHECKPOINT_KINDS = ("checkpoint", "result")
DATA_KIND = "data"
PROGRAM_KIND = "program"


def resolve_inputs(session: Session, tenant_id: str, spec: JobSpecBase) -> dict[str, Artifact]:
    """Map each spec location (`source[0]`, `train_data`, ...) to its artifact.

    InvalidInput (`artifact_not_found`, `wrong_artifact_kind`, listing every culprit in
    `errors`) or, from the spec's `check_input_tensors`, when the tensor tables disagree.
    Locations in errors are the request's (`spec.source[0]`).
    """
    refs = spec.artifact_refs()
    ids = {ref for ref in refs.values() if is_id(ref, ARTIFACT_ID_PREFIX)}  # others cannot exist
    # Tensor tables load one at a time when compared (a spec may name 1000 big checkpoints).
    found = {a.id: a for a in session.scalars(
        select(Artifact).options(defer(Artifact.tensors)).where(
            Artifact.id.in_(ids), Artifact.tenant_id == tenant_id, Artifact.deleted_at.is_(None)))}
    missing = [{"field": f"spec.{field}", "artifact": ref, "message": f"no artifact with id {ref!r}"}
               for field, ref in refs.items() if ref not in found]
    if missing:
        raise InvalidInput(f"{len(missing)} referenced artifact(s) do not exist: "
                           + ", ".join(m["field"] for m in missing), code="artifact_not_found", errors=missing)
    inputs = {field: found[ref] for field, ref in refs.items()}
    wrong = [_kind_error(field, artifact, spec.input_kind(field)) for field, artifact in inputs.items()
             if not _has_kind(artifact, spec.input_kind(field))]
    if wrong:
        raise InvalidInput("; ".join(w["message"] for w in wrong), code="wrong_artifact_kind", errors=wrong)
    def table(location: str) -> dict[str, list[int]]:
        artifact = inputs[location]
        shapes = {t["name"]: t["shape"] for t in artifact.tensors}
        session.expire(artifact, ["tensors"])  # memory for one table at a time
        return shapes

    try:
        spec.check_input_tensors(table)
    except InvalidInput as exc:
        raise located_in(exc, "spec") from None
    return inputs


def _has_kind(artifact: Artifact, kind: InputKind) -> bool:
    if kind == PROGRAM_KIND:
        return artifact.format == "json" and artifact.kind == PROGRAM_KIND
    if artifact.format != "safetensors":
        return False
    return artifact.kind == DATA_KIND if kind == DATA_KIND else artifact.kind in CHECKPOINT_KINDS


def _kind_error(field: str, artifact: Artifact, kind: InputKind) -> dict[str, Any]:
    wanted = {DATA_KIND: "a safetensors data shard (tensors 'inputs' and 'targets')",
              PROGRAM_KIND: "a model program (trajx export)"}.get(kind, "a safetensors checkpoint")
    return {"field": f"spec.{field}", "artifact": artifact.id,
            "message": f"spec.{field}: {artifact.id} is a {artifact.format} {artifact.kind} artifact, "
                       f"expected {wanted}"}
