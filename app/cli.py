"""The server's commands: `trajx serve` (the embedded default) and `trajx admin` (tenants, keys).

They live with the server and register on the `trajx` command only where the server
extras import (`trajx.cli.main` imports this module by name and skips it otherwise).
`trajx serve` needs nothing but this install: SQLite and an artifact directory under
`--data-dir` ($TRAJX_DATA_DIR, default ./var), migrations run on start, a local API
key on first start, and the API under uvicorn with an embedded worker process that
runs the jobs (set TRAJX_DISPATCHER=celery and TRAJX_DATABASE_URL to serve an API in
front of Celery workers instead). Nothing here imports torch.
"""

import importlib.util
import os
from pathlib import Path
from typing import Annotated

import typer

from trajx.cli.app import app

# The `api` extra's modules: without them these commands are not offered (cheap check,
# nothing is imported until a command runs).
for _module in ("fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings"):
    if importlib.util.find_spec(_module) is None:
        raise ModuleNotFoundError(f"the server needs the api extra (no module {_module!r})", name=_module)

DEFAULT_DATA_DIR = Path("var")

admin = typer.Typer(help="Manage tenants and API keys (in the database TRAJX_DATABASE_URL names).",
                    no_args_is_help=True)
app.add_typer(admin, name="admin")


def _embedded_environment(data_dir: Path) -> None:
    """Use `data_dir` (--data-dir, else $TRAJX_DATA_DIR) and put the database and the
    artifacts in it unless TRAJX_DATABASE_URL / TRAJX_STORAGE_DIR say otherwise."""
    data_dir = data_dir.resolve()
    os.environ["TRAJX_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("TRAJX_DATABASE_URL", f"sqlite:///{data_dir / 'trajx.db'}")
    os.environ.setdefault("TRAJX_STORAGE_DIR", str(data_dir / "artifacts"))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    data_dir: Annotated[Path, typer.Option(envvar="TRAJX_DATA_DIR",
                                           help="SQLite database, artifacts and the local API key live here")]
    = DEFAULT_DATA_DIR,
) -> None:
    """Run the API and an embedded worker on this machine (SQLite, local files, no Redis)."""
    import uvicorn

    from app.core.admin import ensure_local_key
    from app.core.logs import configure_logging
    from app.core.migrate import upgrade
    from app.core.settings import Settings
    from app.main import create_app

    _embedded_environment(data_dir)
    settings = Settings()
    upgrade(settings.database_url)
    created = ensure_local_key(settings) if settings.create_local_key else None
    if created is not None:
        typer.echo(f"created tenant 'local'; its API key is in {created[1]}", err=True)
    elif settings.local_key_path.exists():
        typer.echo(f"API key: {settings.local_key_path}", err=True)
    typer.echo(f"trajx API on http://{host}:{port} (data in {settings.data_dir})", err=True)
    configure_logging(settings.log_level)  # before uvicorn's first lines, not at app startup
    # The app's lifespan starts the embedded worker process and stops it on shutdown.
    # log_config=None: uvicorn's own records reach the app's JSON handler on the root
    # logger; the app's middleware already writes one access line per request.
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower(),
                log_config=None, access_log=False)


def _admin_session():
    from app.core.db import make_engine, make_session_factory
    from app.core.migrate import upgrade
    from app.core.settings import get_settings

    settings = get_settings()
    upgrade(settings.database_url)
    return make_session_factory(make_engine(settings.database_url))


@admin.command("create-tenant")
def create_tenant(name: Annotated[str, typer.Argument(help="unique tenant name")]) -> None:
    """Create a tenant and print its id."""
    from app.core.admin import AdminError
    from app.core.admin import create_tenant as create
    from app.core.db import session_scope

    try:
        with session_scope(_admin_session()) as session:
            typer.echo(create(session, name).id)
    except AdminError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@admin.command("create-key")
def create_key(
    tenant: Annotated[str, typer.Argument(help="tenant name")],
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
) -> None:
    """Create an API key for a tenant and print it (shown once; stored hashed)."""
    from app.core.admin import AdminError, create_api_key
    from app.core.db import session_scope

    try:
        with session_scope(_admin_session()) as session:
            typer.echo(create_api_key(session, tenant, name))
    except AdminError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
