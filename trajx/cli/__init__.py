"""`trajx` console command.

Commands live in one module per concern and register on `trajx.cli.app.app`:
`local` (run/init/describe: the engine on this machine), `remote` (the HTTP
client for people and CI), `server` (serve the embedded default, admin).
Importing the CLI never imports torch; commands that need it import it late.
"""

import importlib

from trajx.cli.app import app

_COMMAND_MODULES = ("trajx.cli.local", "trajx.cli.architectures", "trajx.cli.remote", "trajx.cli.server")


def main() -> None:
    for module in _COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A client-only install has no server extras: skip those commands.
            if exc.name == module or (exc.name or "").split(".")[0] in {"fastapi", "sqlalchemy"}:
                continue
            raise
    app()
