"""Turn a spec that names local files into one that names artifacts (CLI side).

This lives with the CLI, not the client: validating a spec locally needs
`trajx.job_spec` and the architectures' configs, which the client does without.

Every artifact reference of a spec (`TransferJob.artifact_refs`) that is not an
artifact id is read as a path relative to the spec file, converted from `.pt`
(and its names mapped, trajx.client.prepare) if needed, uploaded (skipped if the
server has the bytes) and replaced by the artifact id. The spec is validated
locally first, so typos cost no upload.
"""

import copy
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trajx.client.api import Client
from trajx.client.errors import ApiError, InvalidLocalInput
from trajx.client.keymap import AS_IS, KeyMapping
from trajx.client.models import Artifact
from trajx.client.prepare import PreparedFile, prepare_checkpoint
from trajx.errors import TrajxError
from trajx.job_spec import JOB_KINDS, parse_job_spec
from trajx.readable_errors import readable_errors

ARTIFACT_ID = re.compile(r"^art_[0-9a-f]{32}$")
_SLOT = re.compile(r"^(?P<field>\w+)(?:\[(?P<index>\d+)\])?(?:\.(?P<attr>\w+))?$")


def local_refs(spec: dict[str, Any]) -> dict[str, str]:
    """Slot (e.g. `targets[1].checkpoint`) -> reference, for every non-artifact-id ref.

    Raises InvalidLocalInput with the validation messages when the spec is invalid.
    """
    try:
        refs = parse_job_spec(spec).artifact_refs()
    except ValidationError as exc:
        model = JOB_KINDS.get(spec.get("kind", "transfer"))
        problems = "; ".join(f"{e['field'] or 'spec'}: {e['message']}" for e in readable_errors(exc, (), model))
        raise InvalidLocalInput(f"invalid job spec: {problems}") from exc
    except TrajxError as exc:
        field = exc.details.get("field")
        raise InvalidLocalInput(f"invalid job spec: {field + ': ' if field else ''}{exc.message}") from exc
    return {slot: ref for slot, ref in refs.items() if not ARTIFACT_ID.match(ref)}


def in_local_words(error: ApiError, uploaded: dict[str, str], spec: dict[str, Any]) -> ApiError:
    """`error` with each artifact id the CLI uploaded replaced by the local file it came from
    (as the spec names it): `checkpoint_mismatch` then names the user's file, not an id."""
    files = {uploaded[slot]: ref for slot, ref in local_refs(spec).items() if slot in uploaded}

    def local(text: str) -> str:
        for artifact_id, ref in files.items():
            text = text.replace(artifact_id, ref)
        return text

    problem = {**error.problem, "errors": [{key: local(value) if isinstance(value, str) else value
                                             for key, value in item.items()} for item in error.errors]}
    return ApiError(error.status, error.code, local(error.detail), problem)


def upload_spec_files(client: Client, spec: dict[str, Any], base_dir: Path,
                      mapping: KeyMapping = AS_IS,
                      on_note: Callable[[str], None] = lambda note: None,
                      ) -> tuple[dict[str, Any], dict[str, str]]:
    """Return (spec with artifact ids, slot -> uploaded artifact id).

    `mapping` applies to checkpoints, not to data shards (slots named `*data`); each
    mapping applied is reported through `on_note`. Raises InvalidLocalInput naming
    the slot for a reference that is neither an artifact id nor an existing file, or
    a checkpoint that cannot be converted or mapped.
    """
    resolved = copy.deepcopy(spec)
    uploaded: dict[str, str] = {}
    by_path: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix="trajx-convert-") as tmp:
        for slot, ref in local_refs(spec).items():
            path = (base_dir / ref).resolve()
            if not path.is_file():
                raise InvalidLocalInput(f"{slot}: {ref!r} is neither an artifact id nor a file ({path})")
            if path not in by_path:
                slot_mapping = AS_IS if _is_data_slot(slot) else mapping
                by_path[path] = upload_local_file(client, path, Path(tmp) / str(len(by_path)),
                                                  slot_mapping, on_note).id
            uploaded[slot] = by_path[path]
            _set_slot(resolved, slot, by_path[path])
    return resolved, uploaded


def upload_local_file(client: Client, path: Path, scratch_dir: Path,
                      mapping: KeyMapping = AS_IS,
                      on_note: Callable[[str], None] = lambda note: None) -> Artifact:
    """Upload one file, made ready first (trajx.client.prepare) in `scratch_dir`.

    Raises InvalidLocalInput when `path` is not a readable file or cannot be prepared.
    """
    if not path.is_file():
        raise InvalidLocalInput(f"{path}: no such file")
    prepared: PreparedFile = prepare_checkpoint(path, scratch_dir, mapping)
    for note in prepared.notes:
        on_note(f"{path.name}: {note}")
    return client.upload(prepared.path, name=prepared.path.name)


def _is_data_slot(slot: str) -> bool:
    return slot.split("[")[0].split(".")[0].endswith("data")


def _set_slot(doc: dict[str, Any], slot: str, value: str) -> None:
    match = _SLOT.match(slot)
    if match is None:
        raise ValueError(f"unexpected artifact slot {slot!r}")
    field, index, attr = match["field"], match["index"], match["attr"]
    parent, key = doc, field  # `train_data`, `source[1]`, `targets[0].checkpoint`, `arch.program`
    if index is not None:
        parent, key = parent[key], int(index)
    if attr is not None:
        parent, key = parent[key], attr
    parent[key] = value
