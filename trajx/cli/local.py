"""`trajx run|init|describe`: the engine on this machine, no server involved.

Exit codes: 0 success, 2 usage or invalid input (bad spec, files, checkpoints, data,
unsupported model), 1 any other failure (non-finite loss, internal error).
torch is imported inside the commands so `trajx --help` stays fast and torch-free.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from trajx.cli.app import app
from trajx.errors import InvalidInput, TrajxError, UnsupportedModel, is_out_of_memory
from trajx.executors import ResultManifest, RunContext, executor_for
from trajx.method_registry import methods_help

EXIT_FAILURE, EXIT_INVALID = 1, 2
ENGINE_MODULES = frozenset({"torch", "numpy", "scipy", "safetensors", "sklearn", "lapx", "numba", "llvmlite"})
ArchOpt = Annotated[str, typer.Option("--arch", help="Architecture name (see `trajx describe`).")]
ConfigOpt = Annotated[str, typer.Option("--config", help="Architecture config as a JSON object.")]

_stderr = Console(stderr=True)


def _fail(message: str, code: int) -> typer.Exit:
    _stderr.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code)


def _exit_code(error: TrajxError) -> int:
    return EXIT_INVALID if isinstance(error, InvalidInput | UnsupportedModel) else EXIT_FAILURE


@contextmanager
def _needs_engine() -> Iterator[None]:
    """Turn the engine extra missing from this install into a usage error that names it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ENGINE_MODULES:
            raise
        raise _fail(f"this command runs the engine: pip install 'trajx[engine]' (no module {exc.name!r})",
                    EXIT_INVALID) from None


def _parse_config(text: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"--config is not valid JSON: {exc}", EXIT_INVALID) from None
    if not isinstance(config, dict):
        raise _fail("--config must be a JSON object", EXIT_INVALID)
    return config


@app.command(epilog=methods_help())
def run(spec_file: Annotated[Path, typer.Argument(help="Job spec (JSON); file refs are relative to it.")],
        out: Annotated[Path, typer.Option("--out", help="Empty or new directory for the results.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False) -> None:
    """Run a job spec locally (any kind) and write its result files, e.g. a transfer's
    last/best checkpoints, permutations and a report."""
    from trajx.job_spec import parse_job_spec

    try:
        data = json.loads(spec_file.read_text())
        spec = parse_job_spec(data)
    except OSError as exc:
        raise _fail(f"cannot read {spec_file}: {exc.strerror}", EXIT_INVALID) from None
    except json.JSONDecodeError as exc:
        raise _fail(f"{spec_file} is not valid JSON: {exc}", EXIT_INVALID) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _fail(f"invalid job spec: {problems}", EXIT_INVALID) from None
    except TrajxError as exc:
        raise _fail(exc.message, _exit_code(exc)) from None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise _fail(f"--out {out} must be an empty or new directory", EXIT_INVALID)

    from trajx.cli.local_progress import JobProgress

    with _needs_engine():
        executor = executor_for(spec.kind)
    resolve = _file_resolver(spec_file.parent.resolve(), spec.artifact_refs())
    out.mkdir(parents=True, exist_ok=True)
    try:
        with JobProgress(_stderr, spec.kind) as progress:
            manifest = executor(spec, resolve, out, RunContext(on_progress=progress.update))
    except TrajxError as exc:
        raise _fail(f"[{exc.code}] {exc.message}", _exit_code(exc)) from None
    if as_json:
        typer.echo(json.dumps(manifest.summary))
    else:
        Console().print(_files_table(manifest, out))


def _file_resolver(base: Path, refs: dict[str, str]):
    where = {ref: field for field, ref in refs.items()}

    def resolve(ref: str) -> Path:
        path = base / ref  # an absolute ref stays absolute
        if not path.exists():  # a folder is a Hugging Face checkpoint (save_pretrained's output)
            raise InvalidInput(f"{where.get(ref, ref)}: file {path} not found",
                               code="artifact_not_found", field=where.get(ref), artifact=ref)
        return path

    return resolve


def _files_table(manifest: ResultManifest, out: Path) -> Table:
    """The result files, titled with the summary's job-wide values; its per-target
    values (`summary["targets"]`) go on the rows of the files of that target."""
    summary = manifest.summary
    per_target = summary.get("targets") if isinstance(summary.get("targets"), list) else []
    title = ", ".join(f"{k} {_value(v)}" for k, v in summary.items() if not isinstance(v, list | dict))
    table = Table(title=f"{title}; results in {out}" if title else f"results in {out}")
    for column in ("target", "role", "file", "size", "summary"):
        table.add_column(column, overflow="fold")
    shown: set[int] = set()
    for file in manifest.files:
        numbers = ""
        if file.target is not None and file.target < len(per_target) and file.target not in shown:
            shown.add(file.target)  # once per target, on its first file
            numbers = ", ".join(f"{k}={_value(v)}" for k, v in per_target[file.target].items())
        table.add_row("-" if file.target is None else str(file.target), file.role, file.path,
                      str(file.size), numbers)
    return table


def _value(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@app.command()
def init(arch: ArchOpt, config: ConfigOpt,
         seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the initialization.")],
         out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).")]) -> None:
    """Write the architecture's seeded default initialization as a safetensors checkpoint."""
    parsed = _parse_config(config)
    with _needs_engine():
        from trajx.engine.zoo import init_state_dict
        from trajx.io import INIT_SEED_KEY, save_tensors

    try:
        state = init_state_dict(arch, parsed, seed)
    except TrajxError as exc:
        raise _fail(exc.message, _exit_code(exc)) from None
    save_tensors(out, state, {"arch": json.dumps({"name": arch, "config": parsed}), INIT_SEED_KEY: str(seed)})
    _stderr.print(f"wrote {len(state)} tensors to {out}")


@app.command()
def describe(arch: ArchOpt, config: ConfigOpt,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False) -> None:
    """Parameter names and shapes of an architecture and its permutation groups."""
    parsed = _parse_config(config)
    with _needs_engine():
        from trajx.engine.permutation.trace import derive_spec
        from trajx.engine.zoo import build_model, example_input

    try:
        model = build_model(arch, parsed)
        spec = derive_spec(model, example_input(arch, parsed))
    except TrajxError as exc:
        raise _fail(exc.message, _exit_code(exc)) from None
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise _fail(f"{arch} with this config does not fit in memory: {exc}", EXIT_FAILURE) from None
    print_description(describe_model(model, spec, {"arch": arch, "config": parsed}), as_json, title=arch)


def describe_model(model: Any, spec: Any, header: dict[str, Any]) -> dict[str, Any]:
    """Tensors (name, shape, dtype, group per axis) and permutation groups of `model`."""
    groups = spec.to_json()
    parameters = [{"name": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                   "groups": groups.get(name, [None] * tensor.ndim)}
                  for name, tensor in model.state_dict().items()]
    return {**header, "parameters": parameters,
            "groups": [{"name": g.name, "size": g.size, "axes": len(g.axes)} for g in spec.groups]}


def print_description(description: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(description))
        return
    parameters = description["parameters"]
    console = Console()
    params_table = Table(title=f"{title}: {len(parameters)} tensors")
    for column in ("name", "shape", "dtype", "groups per axis"):
        params_table.add_column(column, overflow="fold")  # names must stay whole to be copied
    for p in parameters:
        params_table.add_row(p["name"], str(p["shape"]), p["dtype"],
                             ", ".join("-" if g is None else g for g in p["groups"]))
    groups_table = Table(title=f"{len(description['groups'])} permutation groups")
    for column in ("group", "units", "axes"):
        groups_table.add_column(column, overflow="fold")
    for g in description["groups"]:
        groups_table.add_row(g["name"], str(g["size"]), str(g["axes"]))
    console.print(params_table)
    console.print(groups_table)
