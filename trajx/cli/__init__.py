"""`trajx` console command.

Commands live in one module per concern and register on `trajx.cli.app.app`:
`local` (run/init/describe: the engine on this machine), `export` (a user's
model as a program), `remote` (the HTTP
client for people and CI), `server` (serve the embedded default, admin).
Importing the CLI never imports torch; commands that need it import it late.
"""

import importlib

from trajx.cli.app import app

_COMMAND_MODULES = ("trajx.cli.local", "trajx.cli.export", "trajx.cli.architectures", "trajx.cli.remote")
# Imported by name: the server depends on this package, never the other way round.
SERVER_COMMANDS = "app.cli"


def main() -> None:
    for module in _COMMAND_MODULES:
        importlib.import_module(module)
    try:
        importlib.import_module(SERVER_COMMANDS)
    except ModuleNotFoundError as exc:
        # No server, or not its extras (a client install): no serve/admin commands. A
        # missing module of our own packages is a bug, not a smaller install.
        if exc.name not in ("app", SERVER_COMMANDS) and (exc.name or "").split(".")[0] in ("app", "worker", "trajx"):
            raise
    app()
