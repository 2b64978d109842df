"""Administration: tenants and API keys, and the embedded default's first-start key.

The operations behind `trajx admin create-tenant | create-key | list-keys | revoke-key`
(app/cli.py). A key is returned once when created (it is stored hashed); `describe_key`
is one line per key, never the key itself.
"""

import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.persistence.db import make_engine, make_session_factory, session_scope
from app.core.persistence.migrate import upgrade
from app.core.persistence.models import ApiKey, Tenant, utcnow
from app.core.settings import Settings
from app.core.tenancy.auth import issue_key

LOCAL_TENANT = "local"


class AdminError(Exception):
    """A tenant that already exists or does not exist."""


def create_tenant(session: Session, name: str) -> Tenant:
    """Create tenant `name`; AdminError if the name is taken. Flushes, does not commit."""
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise AdminError(f"tenant {name!r} already exists")
    tenant = Tenant(name=name, created_at=utcnow())
    session.add(tenant)
    session.flush()
    return tenant


def create_api_key(session: Session, tenant_name: str, key_name: str = "") -> str:
    """Issue a key for the tenant named `tenant_name`; returns the plaintext key. AdminError if unknown."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        raise AdminError(f"no tenant named {tenant_name!r}")
    _, key = issue_key(session, tenant, key_name)
    return key


def list_api_keys(session: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """(key row, tenant name) for every key, or the keys of `tenant_name`; oldest first."""
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at,
                                                                                           ApiKey.id)
    if tenant_name is not None:
        if session.scalar(select(Tenant.id).where(Tenant.name == tenant_name)) is None:
            raise AdminError(f"no tenant named {tenant_name!r}")
        query = query.where(Tenant.name == tenant_name)
    return [(key, name) for key, name in session.execute(query).all()]


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    """Mark key `key_id` revoked (it stops working within TRAJX_AUTH_CACHE_SECONDS). Flushes.

    AdminError if no such key; revoking a revoked key keeps its first revocation time.
    """
    key = session.get(ApiKey, key_id)
    if key is None:
        raise AdminError(f"no API key with id {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def describe_key(key: ApiKey, tenant_name: str) -> str:
    """One tab-separated line: id, tenant, prefix, name, created, last used, revoked (or -)."""
    def when(value) -> str:
        return value.isoformat(timespec="seconds") if value else "-"

    return "\t".join([key.id, tenant_name, key.prefix + "...", key.name or "-", when(key.created_at),
                      when(key.last_used_at), "revoked " + when(key.revoked_at) if key.revoked_at else "active"])


def ensure_local_key(settings: Settings) -> tuple[str, Path] | None:
    """On first start of the embedded default, create tenant "local" and a key file (mode 0600).

    Returns (key, path) when it created them, None when the key file already exists.
    Migrates the database first. The file is written before the transaction commits
    so a crash never leaves a tenant whose key nobody has.
    """
    path = settings.local_key_path
    if path.exists():
        return None
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == LOCAL_TENANT))
            if tenant is None:
                tenant = create_tenant(session, LOCAL_TENANT)
            _, key = issue_key(session, tenant, "local")
            _write_private(path, key + "\n")
    finally:
        engine.dispose()
    return key, path


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
