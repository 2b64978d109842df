"""Turn a spec that names local files into one that names artifacts (CLI side).

This lives with the CLI, not the client: validating a spec locally needs
`trajx.spec` (pydantic), and the client itself needs only httpx.

Every artifact reference of a spec (`TransferJob.artifact_refs`) that is not an
artifact id is read as a path relative to the spec file, converted from `.pt`
if needed, uploaded (skipped if the server has the bytes) and replaced by the
artifact id. The spec is validated locally first, so typos cost no upload.
"""

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trajx.client.api import Client
from trajx.client.convert import convert_state_dict, needs_conversion
from trajx.client.errors import InvalidLocalInput
from trajx.client.models import Artifact
from trajx.errors import TrajxError
from trajx.spec import parse_job_spec

ARTIFACT_ID = re.compile(r"^art_[0-9a-f]{32}$")
_SLOT = re.compile(r"^(?P<field>\w+)(?:\[(?P<index>\d+)\])?(?:\.(?P<attr>\w+))?$")


def local_refs(spec: dict[str, Any]) -> dict[str, str]:
    """Slot (e.g. `targets[1].checkpoint`) -> reference, for every non-artifact-id ref.

    Raises InvalidLocalInput with the validation messages when the spec is invalid.
    """
    try:
        refs = parse_job_spec(spec).artifact_refs()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise InvalidLocalInput(f"invalid job spec: {problems}") from exc
    except TrajxError as exc:
        raise InvalidLocalInput(f"invalid job spec: {exc.message}") from exc
    return {slot: ref for slot, ref in refs.items() if not ARTIFACT_ID.match(ref)}


def upload_spec_files(client: Client, spec: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Return (spec with artifact ids, slot -> uploaded artifact id).

    Raises InvalidLocalInput naming the slot for a reference that is neither an
    artifact id nor an existing file, or a `.pt` file that is not a plain state dict.
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
                by_path[path] = upload_local_file(client, path, Path(tmp) / str(len(by_path))).id
            uploaded[slot] = by_path[path]
            _set_slot(resolved, slot, by_path[path])
    return resolved, uploaded


def upload_local_file(client: Client, path: Path, scratch_dir: Path) -> Artifact:
    """Upload one file, converting a `.pt`/`.pth` state dict to safetensors in `scratch_dir` first.

    Raises InvalidLocalInput when `path` is not a readable file or not a convertible state dict.
    """
    if not path.is_file():
        raise InvalidLocalInput(f"{path}: no such file")
    to_send = convert_state_dict(path, scratch_dir) if needs_conversion(path) else path
    return client.upload(to_send, name=to_send.name)


def _set_slot(doc: dict[str, Any], slot: str, value: str) -> None:
    match = _SLOT.match(slot)
    if match is None:
        raise ValueError(f"unexpected artifact slot {slot!r}")
    field, index, attr = match["field"], match["index"], match["attr"]
    if index is None:
        doc[field] = value
    elif attr is None:
        doc[field][int(index)] = value
    else:
        doc[field][int(index)][attr] = value
