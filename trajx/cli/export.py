"""`trajx export`: turn a model defined in your own code into a model program, on your machine.

Running the user's code is fine here: it is their machine and their code. What leaves
it is data only: `program.json` (the model's torch.export graphs, no pickle, no weights)
and `init.safetensors` (its initial checkpoint). The permutation groups the service will
use are printed, as `trajx describe` does, so nothing about what will move is a surprise.
"""

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trajx.cli.app import app
from trajx.cli.local import (
    EXIT_INVALID,
    _exit_code,
    _fail,
    _needs_engine,
    _parse_config,
    describe_model,
    print_description,
)
from trajx.errors import TrajxError

PROGRAM_FILE, INIT_FILE = "program.json", "init.safetensors"


@app.command()
def export(model: Annotated[str, typer.Argument(
               help="The model's factory: 'package.module:make_model' or 'path/to/file.py:make_model' "
                    "(a callable returning an nn.Module, or the nn.Module class itself).")],
           out: Annotated[Path, typer.Option("--out", help="Directory to write program.json and "
                                             "init.safetensors into.")] = Path("program"),
           config: Annotated[str, typer.Option("--config", help="Keyword arguments of the factory, "
                                                "as a JSON object.")] = "{}",
           input_shape: Annotated[list[str] | None, typer.Option(
               "--input-shape", help="Shape of one example input, e.g. 2,64 (repeat for several inputs).")] = None,
           input_dtype: Annotated[str, typer.Option("--input-dtype", help="dtype of the example inputs "
                                                    "(float32; int64 for token ids).")] = "float32",
           example_data: Annotated[Path | None, typer.Option(
               "--example-data", help="A data shard (safetensors with 'inputs'): its first two samples "
                                      "are the example input.")] = None,
           task: Annotated[str, typer.Option("--task", help="classes-or-values, causal-lm or "
                                             "masked-lm.")] = "classes-or-values",
           seed: Annotated[int, typer.Option("--seed", min=0, help="Seed for the model's init.")] = 0,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
           ) -> None:
    """Export your own model as a program the service can run, with its initial checkpoint."""
    kwargs = _parse_config(config)
    with _needs_engine():
        import torch

        from trajx.engine.permutation.trace import derive_spec
        from trajx.io import INIT_SEED_KEY, save_tensors
        from trajx.program.build import export_program, load_program

    examples = _examples(input_shape, input_dtype, example_data)
    torch.manual_seed(seed)
    module = _load_factory(model)(**kwargs)
    if not isinstance(module, torch.nn.Module):
        raise _fail(f"{model} returned a {type(module).__name__}, not a torch.nn.Module", EXIT_INVALID)
    init = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
    try:
        document = export_program(module, examples, task)
        rebuilt = load_program(document)  # what the service will run, checked here first
        rebuilt.load_state_dict(init)
        spec = derive_spec(rebuilt, examples[0] if len(examples) == 1 else examples)
    except TrajxError as exc:
        raise _fail(exc.message, _exit_code(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / PROGRAM_FILE).write_text(json.dumps(document))
    save_tensors(out / INIT_FILE, init, {"program": PROGRAM_FILE, INIT_SEED_KEY: str(seed)})
    header = {"program": str(out / PROGRAM_FILE), "checkpoint": str(out / INIT_FILE),
              "operators": len({op for op in _operators(document)})}
    print_description(describe_model(rebuilt, spec, header), as_json, title=model)
    if not as_json:
        typer.echo(f"wrote {out / PROGRAM_FILE} and {out / INIT_FILE}", err=True)


def _examples(shapes: list[str] | None, dtype_name: str, data: Path | None) -> tuple[Any, ...]:
    import torch

    if data is not None:
        from trajx.io import load_tensors

        inputs = load_tensors(data, str(data)).get("inputs")
        if inputs is None:
            raise _fail(f"{data}: no 'inputs' tensor", EXIT_INVALID)
        return (inputs[:2],)
    if not shapes:
        raise _fail("give --input-shape (e.g. 2,64) or --example-data", EXIT_INVALID)
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise _fail(f"--input-dtype {dtype_name!r} is not a torch dtype", EXIT_INVALID)
    examples = []
    for text in shapes:
        try:
            shape = [int(part) for part in text.split(",")]
        except ValueError:
            raise _fail(f"--input-shape {text!r}: expected sizes separated by commas", EXIT_INVALID) from None
        examples.append(torch.randn(shape).to(dtype) if dtype.is_floating_point
                        else torch.zeros(shape, dtype=dtype))
    return tuple(examples)


def _load_factory(reference: str) -> Any:
    location, _, name = reference.rpartition(":")
    if not location or not name:
        raise _fail(f"{reference!r}: expected 'module:factory' or 'file.py:factory'", EXIT_INVALID)
    try:
        if location.endswith(".py"):
            path = Path(location).resolve()
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise _fail(f"{location}: not a Python file", EXIT_INVALID)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module  # dataclasses and pickling-free helpers look it up
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(location)
    except (ImportError, OSError) as exc:
        raise _fail(f"cannot import {location!r}: {exc}", EXIT_INVALID) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise _fail(f"{location} has no callable {name!r}", EXIT_INVALID)
    return factory


def _operators(document: dict[str, Any]) -> list[str]:
    return [node["target"] for graph in document["graphs"].values()
            for node in graph["graph_module"]["graph"]["nodes"]]
