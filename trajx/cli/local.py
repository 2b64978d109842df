"""`trajx run|init|describe`: the engine on this machine, no server involved.

Exit codes: 0 success, 2 usage or invalid input (bad spec, files, checkpoints, data,
unsupported model), 1 any other failure (non-finite loss, internal error).
torch is imported inside the commands so `trajx --help` stays fast and torch-free.
"""

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from trajx.cli.app import app
from trajx.errors import InvalidInput, TrajxError, UnsupportedModel, is_out_of_memory

EXIT_FAILURE, EXIT_INVALID = 1, 2
ArchOpt = Annotated[str, typer.Option("--arch", help="Architecture name (see `trajx describe`).")]
ConfigOpt = Annotated[str, typer.Option("--config", help="Architecture config as a JSON object.")]

_stderr = Console(stderr=True)


def _fail(message: str, code: int) -> typer.Exit:
    _stderr.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code)


def _exit_code(error: TrajxError) -> int:
    return EXIT_INVALID if isinstance(error, InvalidInput | UnsupportedModel) else EXIT_FAILURE


def _parse_config(text: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"--config is not valid JSON: {exc}", EXIT_INVALID) from None
    if not isinstance(config, dict):
        raise _fail("--config must be a JSON object", EXIT_INVALID)
    return config


@app.command()
def run(spec_file: Annotated[Path, typer.Argument(help="Job spec (JSON); file refs are relative to it.")],
        out: Annotated[Path, typer.Option("--out", help="Empty or new directory for the results.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False) -> None:
    """Run a transfer job locally and write last/best checkpoints, permutations and a report."""
    from trajx.spec import parse_job_spec

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

    from trajx.cli.local_progress import TransferProgress
    from trajx.runner import execute

    resolve = _file_resolver(spec_file.parent.resolve(), spec.artifact_refs())
    out.mkdir(parents=True, exist_ok=True)
    try:
        with TransferProgress(_stderr, len(spec.targets), spec.params.steps) as progress:
            summary = execute(spec, resolve, out, on_progress=progress.update)
    except TrajxError as exc:
        raise _fail(f"[{exc.code}] {exc.message}", _exit_code(exc)) from None
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        Console().print(_summary_table(summary, out))


def _file_resolver(base: Path, refs: dict[str, str]):
    where = {ref: field for field, ref in refs.items()}

    def resolve(ref: str) -> Path:
        path = base / ref  # an absolute ref stays absolute
        if not path.exists():  # a folder is a Hugging Face checkpoint (save_pretrained's output)
            raise InvalidInput(f"{where.get(ref, ref)}: file {path} not found",
                               code="artifact_not_found", field=where.get(ref), artifact=ref)
        return path

    return resolve


def _summary_table(summary: dict[str, Any], out: Path) -> Table:
    table = Table(title=f"{summary['method']} on {summary['device']}, "
                        f"{summary['seconds']:.1f} s, results in {out}")
    for column in ("target", "last accuracy", "best accuracy", "best step", "last loss"):
        table.add_column(column, justify="right")
    for index, target in enumerate(summary["targets"]):
        table.add_row(str(index), _number(target["last_accuracy"]), _number(target["best_accuracy"]),
                      str(target["best_step"]), _number(target["last_loss"]))
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command()
def init(arch: ArchOpt, config: ConfigOpt,
         seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the initialization.")],
         out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).")]) -> None:
    """Write the architecture's seeded default initialization as a safetensors checkpoint."""
    parsed = _parse_config(config)
    from trajx.engine.zoo import init_state_dict
    from trajx.io import save_tensors

    try:
        state = init_state_dict(arch, parsed, seed)
    except TrajxError as exc:
        raise _fail(exc.message, _exit_code(exc)) from None
    save_tensors(out, state, {"arch": json.dumps({"name": arch, "config": parsed}), "seed": str(seed)})
    _stderr.print(f"wrote {len(state)} tensors to {out}")


@app.command()
def describe(arch: ArchOpt, config: ConfigOpt,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False) -> None:
    """Parameter names and shapes of an architecture and its permutation groups."""
    parsed = _parse_config(config)
    from trajx.engine.trace import derive_spec
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
    groups = spec.to_json()
    parameters = [{"name": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                   "groups": groups.get(name, [None] * tensor.ndim)}
                  for name, tensor in model.state_dict().items()]
    description = {"arch": arch, "config": parsed, "parameters": parameters,
                   "groups": [{"name": g.name, "size": g.size, "axes": len(g.axes)} for g in spec.groups]}
    if as_json:
        typer.echo(json.dumps(description))
        return
    console = Console()
    params_table = Table(title=f"{arch}: {len(parameters)} tensors")
    for column in ("name", "shape", "dtype", "groups per axis"):
        params_table.add_column(column, overflow="fold")  # names must stay whole to be copied
    for p in parameters:
        params_table.add_row(p["name"], str(p["shape"]), p["dtype"],
                             ", ".join("-" if g is None else g for g in p["groups"]))
    groups_table = Table(title=f"{len(spec.groups)} permutation groups")
    for column in ("group", "units", "axes"):
        groups_table.add_column(column, overflow="fold")
    for g in description["groups"]:
        groups_table.add_row(g["name"], str(g["size"]), str(g["axes"]))
    console.print(params_table)
    console.print(groups_table)
