"""`trajx architectures`: the architectures this installation can build, and their config keys.

Built-in ones come with trajx; plug-ins come from other packages through the
`trajx.architectures` entry point group (see `trajx.engine.zoo.registry`).
"""

import json
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from trajx.cli.app import app


def describe_architectures(points: list[EntryPoint] | None = None) -> list[dict[str, Any]]:
    """Each registered architecture: name, origin (`built-in` or the plug-in's entry point),
    description and config keys with their type and default (`required` when none).

    `points` defaults to the installed entry points. Raises InvalidInput naming a plug-in
    that does not load.
    """
    from trajx.engine.zoo import ENTRY_POINT_GROUP, REGISTRY, load_entry_points

    points = list(entry_points(group=ENTRY_POINT_GROUP)) if points is None else points
    plugins = {point.name: point.value for point in points}
    load_entry_points(points)
    return [{"name": name, "origin": f"plug-in {plugins[name]}" if name in plugins else "built-in",
             "description": entry.description,
             "config": [_config_key(key, field) for key, field in entry.config_model.model_fields.items()]}
            for name, entry in sorted(REGISTRY.items())]


def _config_key(key: str, field: Any) -> dict[str, Any]:
    annotation = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    return {"key": key, "type": annotation, "required": field.is_required(), "default": default}


@app.command()
def architectures(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False
                  ) -> None:
    """List the architectures (built-in and plug-in) with their config keys."""
    from trajx.errors import TrajxError

    try:
        found = describe_architectures()
    except TrajxError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"data": found}, default=str))
        return
    table = Table(title="architectures (`arch.name`, keys of `arch.config`)", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("origin")
    table.add_column("config keys (default)", overflow="fold")
    for arch in found:
        keys = ", ".join(f"{k['key']}" + ("" if k["required"] else f"={json.dumps(k['default'], default=str)}")
                         for k in arch["config"])
        table.add_row(arch["name"], arch["origin"], keys)
    Console().print(table)
