"""The server's commands: `trajx serve` (the embedded default) and `trajx admin` (tenants, keys).

They live with the server and register on the `trajx` command only where the server
extras import (`trajx.cli.main` imports this module by name and skips it otherwise).
`trajx serve` needs nothing but this install: SQLite and an artifact directory under
`--data-dir` ($TRAJX_DATA_DIR, default ./var), migrations run on start, a local API
key on first start, and the API under uvicorn with an embedded worker process that
runs the jobs (set TRAJX_DISPATCHER=celery and TRAJX_DATABASE_URL to serve an API in
front of Celery workers instead). Nothing here imports torch.
"""

import contextlib
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
    artifacts in it unless TRAJX_DATABASE_URL / TRAJX_STORAGE_DIR say otherwise; allow
    webhooks to local addresses unless TRAJX_WEBHOOK_ALLOW_PRIVATE says otherwise."""
    data_dir = data_dir.resolve()
    os.environ["TRAJX_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("TRAJX_DATABASE_URL", f"sqlite:///{data_dir / 'trajx.db'}")
    os.environ.setdefault("TRAJX_STORAGE_DIR", str(data_dir / "artifacts"))
    # One machine, one user: a webhook to a local receiver is the usual case here.
    os.environ.setdefault("TRAJX_WEBHOOK_ALLOW_PRIVATE", "true")


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
    from uvicorn.server import STARTUP_FAILURE

    from app.api.slow_clients import header_timeout_protocol
    from app.core.logs import configure_logging
    from app.core.persistence.migrate import upgrade
    from app.core.settings import Settings
    from app.core.tenancy.admin import ensure_local_key
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
    # The header timeout protocol bounds slow request headers; the app bounds slow bodies.
    # Open event streams end when shutdown begins (sse-starlette, app/api/event_stream.py).
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_config=None,
                                           log_level=settings.log_level.lower(), access_log=False,
                                           http=header_timeout_protocol(settings.header_timeout_seconds)))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run does
        server.run()
    if not server.started:
        raise typer.Exit(STARTUP_FAILURE)  # e.g. the port is taken: uvicorn logged why


@admin.callback()
def _admin_options(
    data_dir: Annotated[Path, typer.Option(envvar="TRAJX_DATA_DIR", help="the data dir of the `trajx serve` "
                                           "to manage (its database), unless TRAJX_DATABASE_URL names one")]
    = DEFAULT_DATA_DIR,
) -> None:
    """Manage tenants and API keys (in the database TRAJX_DATABASE_URL names, else the one in
    --data-dir, as `trajx serve` does)."""
    if "TRAJX_DATABASE_URL" not in os.environ:
        _serve_database.append(data_dir.resolve() / "trajx.db")
        os.environ["TRAJX_DATABASE_URL"] = f"sqlite:///{_serve_database[-1]}"


# The database `trajx serve` made in the data dir, when the admin commands use that one.
_serve_database: list[Path] = []


def _admin_session():
    from app.core.persistence.db import make_engine, make_session_factory
    from app.core.persistence.migrate import upgrade
    from app.core.settings import get_settings

    settings = get_settings()
    if _serve_database and not _serve_database[-1].exists():
        # An admin command must not create an empty database beside the real one.
        typer.echo(f"error: no database at {_serve_database[-1]}: give the server's data dir with --data-dir or "
                   "TRAJX_DATA_DIR (or its database with TRAJX_DATABASE_URL)", err=True)
        raise typer.Exit(2)
    upgrade(settings.database_url)
    return make_session_factory(make_engine(settings.database_url))


@admin.command("create-tenant")
def create_tenant(name: Annotated[str, typer.Argument(help="unique tenant name")]) -> None:
    """Create a tenant and print its id."""
    from app.core.tenancy.admin import create_tenant as create

    _run_admin(lambda session: typer.echo(create(session, name).id))


@admin.command("create-key")
def create_key(
    tenant: Annotated[str, typer.Argument(help="tenant name")],
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
) -> None:
    """Create an API key for a tenant and print it (shown once; stored hashed)."""
    from app.core.tenancy.admin import create_api_key

    _run_admin(lambda session: typer.echo(create_api_key(session, tenant, name)))


@admin.command("list-keys")
def list_keys(tenant: Annotated[str | None, typer.Argument(help="only this tenant's keys")] = None) -> None:
    """List API keys: id, tenant, prefix, name, created, last used, state (never the key)."""
    from app.core.tenancy.admin import describe_key, list_api_keys

    def show(session) -> None:
        keys = list_api_keys(session, tenant)
        for key, tenant_name in keys:
            typer.echo(describe_key(key, tenant_name))
        if not keys:
            typer.echo("no API keys", err=True)

    _run_admin(show)


@admin.command("revoke-key")
def revoke_key(key_id: Annotated[str, typer.Argument(help="the key's id (key_..., see list-keys)")]) -> None:
    """Revoke an API key; it stops working within TRAJX_AUTH_CACHE_SECONDS."""
    from app.core.persistence.models import Tenant
    from app.core.tenancy.admin import describe_key, revoke_api_key

    def revoke(session) -> None:
        key = revoke_api_key(session, key_id)
        typer.echo(describe_key(key, session.get(Tenant, key.tenant_id).name))

    _run_admin(revoke)


def _run_admin(work) -> None:
    """`work(session)` in one committed transaction; an AdminError is exit code 1."""
    from app.core.persistence.db import session_scope
    from app.core.tenancy.admin import AdminError

    try:
        with session_scope(_admin_session()) as session:
            work(session)
    except AdminError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
