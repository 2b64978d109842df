"""Admin functions and command, the first-start local key, and settings validation."""

import stat

import pytest
from pydantic import ValidationError
from sqlalchemy import select

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


def test_admin_command(monkeypatch, settings, capsys):
    from app.core.settings import get_settings

    monkeypatch.setenv("TRAJX_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        assert admin.main(["create-tenant", "cli-co"]) == 0
        assert capsys.readouterr().out.startswith("ten_")
        assert admin.main(["create-key", "cli-co", "--name", "ci"]) == 0
        assert capsys.readouterr().out.startswith("trx_")
        assert admin.main(["create-tenant", "cli-co"]) == 1
        assert "already exists" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()


def test_python_m_app_admin_lists_and_revokes_keys(monkeypatch, settings, session_factory, capsys):
    from app.core.settings import get_settings

    monkeypatch.setenv("TRAJX_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        with session_factory() as session:
            admin.create_tenant(session, "keys-co")
            key = admin.create_api_key(session, "keys-co", "deploy")
            session.commit()
        assert admin.main(["list-keys", "keys-co"]) == 0
        key_id, tenant, prefix, name, *_, state = capsys.readouterr().out.strip().split("\t")
        assert (tenant, prefix, name, state) == ("keys-co", key[:12] + "...", "deploy", "active")
        assert admin.main(["revoke-key", key_id]) == 0
        assert "\trevoked " in capsys.readouterr().out
        with session_factory() as session:
            assert authenticate(session, key) is None
        assert admin.main(["revoke-key", "key_unknown"]) == 1
        assert "no API key" in capsys.readouterr().err
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
