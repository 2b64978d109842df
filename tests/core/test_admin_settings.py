"""Admin functions and command, the first-start local key, and settings validation."""

import stat

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from typer.testing import CliRunner

from app.core.persistence.models import Tenant
from app.core.settings import Settings
from app.core.tenancy import admin
from app.core.tenancy.auth import authenticate


def test_ensure_local_key_creates_a_private_key_file_once(settings, session_factory):
    created = admin.ensure_local_key(settings)
    assert created is not None
    key, path = created
    assert path == settings.data_dir / "local-api-key" and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admin.ensure_local_key(settings) is None
    with session_factory() as session:
        local = session.scalar(select(Tenant).where(Tenant.name == "local"))
        assert authenticate(session, key).tenant_id == local.id


def test_create_tenant_and_key_refuse_duplicates_and_unknowns(session_factory):
    with session_factory() as session:
        tenant = admin.create_tenant(session, "acme")
        key = admin.create_api_key(session, "acme", "ci")
        assert authenticate(session, key).tenant_id == tenant.id
        with pytest.raises(admin.AdminError, match="already exists"):
            admin.create_tenant(session, "acme")
        with pytest.raises(admin.AdminError, match="no tenant named 'nobody'"):
            admin.create_api_key(session, "nobody")


def _trajx_admin(*args: str):
    """`trajx admin ...` in this process (app/cli.py, the one admin command line)."""
    import app.cli  # noqa: F401  (registers `trajx admin`)
    from trajx.cli.app import app as cli

    return CliRunner().invoke(cli, ["admin", *args])


def test_admin_command(monkeypatch, settings):
    from app.core.settings import get_settings

    monkeypatch.setenv("TRAJX_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        created = _trajx_admin("create-tenant", "cli-co")
        assert created.exit_code == 0 and created.stdout.startswith("ten_")
        key = _trajx_admin("create-key", "cli-co", "--name", "ci")
        assert key.exit_code == 0 and key.stdout.startswith("trx_")
        again = _trajx_admin("create-tenant", "cli-co")
        assert again.exit_code == 1 and "already exists" in again.stderr
    finally:
        get_settings.cache_clear()


def test_trajx_admin_lists_and_revokes_keys(monkeypatch, settings, session_factory):
    from app.core.settings import get_settings

    monkeypatch.setenv("TRAJX_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        with session_factory() as session:
            admin.create_tenant(session, "keys-co")
            key = admin.create_api_key(session, "keys-co", "deploy")
            session.commit()
        listed = _trajx_admin("list-keys", "keys-co")
        assert listed.exit_code == 0
        key_id, tenant, prefix, name, *_, state = listed.stdout.strip().split("\t")
        assert (tenant, prefix, name, state) == ("keys-co", key[:12] + "...", "deploy", "active")
        revoked = _trajx_admin("revoke-key", key_id)
        assert revoked.exit_code == 0 and "\trevoked " in revoked.stdout
        with session_factory() as session:
            assert authenticate(session, key) is None
        unknown = _trajx_admin("revoke-key", "key_unknown")
        assert unknown.exit_code == 1 and "no API key" in unknown.stderr
    finally:
        get_settings.cache_clear()


def test_settings_normalise_postgres_urls_and_refuse_unsafe_production():
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValidationError, match="TRAJX_DATABASE_URL must be set explicitly"):
        Settings(environment="production", create_local_key=False)
    with pytest.raises(ValidationError, match="TRAJX_DISPATCHER=none"):
        Settings(environment="production", database_url="postgresql://db/trajx", dispatcher="none",
                 create_local_key=False)
    ok = Settings(environment="production", database_url="postgresql://db/trajx", create_local_key=False,
                  dispatcher="celery")
    assert ok.environment == "production"


def test_settings_come_from_trajx_environment(monkeypatch):
    monkeypatch.setenv("TRAJX_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("TRAJX_DISPATCHER", "none")
    assert (Settings().max_upload_bytes, Settings().dispatcher) == (1234, "none")


def test_first_start_migrates_and_creates_a_working_local_key(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app

    fresh = Settings(database_url=f"sqlite:///{tmp_path}/fresh.db", data_dir=tmp_path, dispatcher="none",
                     storage_dir=tmp_path / "artifacts")
    app = create_app(fresh)
    with TestClient(app) as client:
        key = fresh.local_key_path.read_text().strip()
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    app.state.services.engine.dispose()
