"""Make a user's checkpoint file ready to upload: one safetensors file with the model's names.

- `.pt`/`.pth`: converted locally (trajx.client.convert), nested dicts and prefixes mapped;
- `*.safetensors.index.json`: a Hugging Face sharded checkpoint, merged into one file;
- `.safetensors`: uploaded as is unless its names carry a wrapper prefix or `--strip-prefix`
  asks for one, then rewritten with the new names (header only, no torch).
Anything else (a data shard in JSON, say) is uploaded as it is.
"""

from dataclasses import dataclass, field
from pathlib import Path

from trajx.client.convert import convert_state_dict, needs_conversion
from trajx.client.keymap import AS_IS, WRAPPER_PREFIXES, KeyMapping, plan_renames
from trajx.client.safetensors_file import is_shard_index, merge_shards, tensor_names, write_renamed


@dataclass(frozen=True)
class PreparedFile:
    """The file to upload and what was done to get it (empty when it is the user's own file)."""

    path: Path
    notes: list[str] = field(default_factory=list)


def prepare_checkpoint(path: Path, scratch_dir: Path, mapping: KeyMapping = AS_IS) -> PreparedFile:
    """`path` as one safetensors file with mapped names; new files go under `scratch_dir`.

    Raises InvalidLocalInput naming the file when it cannot be read or mapped.
    """
    if needs_conversion(path):
        converted, notes = convert_state_dict(path, scratch_dir, mapping)
        return PreparedFile(converted, [f"converted {path.name} to safetensors", *notes])
    notes = []
    if is_shard_index(path):
        scratch_dir.mkdir(parents=True, exist_ok=True)
        merged = merge_shards(path, scratch_dir / path.name.removesuffix(".index.json"))
        notes.append(f"merged the shards of {path.name} into one file")
        path = merged
    if path.suffix != ".safetensors":
        return PreparedFile(path, notes)
    renames, rename_notes = plan_renames(tensor_names(path), mapping, WRAPPER_PREFIXES)
    if renames:
        (scratch_dir / "renamed").mkdir(parents=True, exist_ok=True)
        path = write_renamed(path, scratch_dir / "renamed" / path.name, renames)
    return PreparedFile(path, notes + rename_notes)
