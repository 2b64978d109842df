"""`trajx admin` commands against a real SQLite database (migrated on first use)."""

from typer.testing import CliRunner

import app.cli
from trajx.cli.app import app


def test_admin_creates_a_tenant_and_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAJX_DATABASE_URL", f"sqlite:///{tmp_path / 'trajx.db'}")
    from app.core.settings import get_settings
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(app, ["admin", "create-tenant", "acme"])
        assert created.exit_code == 0, created.output
        assert created.stdout.strip().startswith("ten_")
        key = runner.invoke(app, ["admin", "create-key", "acme", "--name", "ci"])
        assert key.exit_code == 0 and key.stdout.strip().startswith("trx_")
        again = runner.invoke(app, ["admin", "create-tenant", "acme"])
        assert again.exit_code == 1 and "already exists" in again.stderr
        unknown = runner.invoke(app, ["admin", "create-key", "nobody"])
        assert unknown.exit_code == 1 and "no tenant named 'nobody'" in unknown.stderr
    finally:
        get_settings.cache_clear()


def test_admin_lists_and_revokes_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAJX_DATABASE_URL", f"sqlite:///{tmp_path / 'trajx.db'}")
    from app.core.persistence.db import make_engine, make_session_factory
    from app.core.settings import get_settings
    from app.core.tenancy.auth import authenticate
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        for tenant in ("acme", "other"):
            assert runner.invoke(app, ["admin", "create-tenant", tenant]).exit_code == 0
        key = runner.invoke(app, ["admin", "create-key", "acme", "--name", "ci"]).stdout.strip()
        runner.invoke(app, ["admin", "create-key", "other"])
        listed = runner.invoke(app, ["admin", "list-keys", "acme"])
        assert listed.exit_code == 0, listed.output
        [line] = listed.stdout.splitlines()
        key_id, tenant, prefix, name, *_, state = line.split("\t")
        assert (tenant, prefix, name, state) == ("acme", key[:12] + "...", "ci", "active")
        assert key not in listed.stdout  # only the prefix, never the key
        assert len(runner.invoke(app, ["admin", "list-keys"]).stdout.splitlines()) == 2
        revoked = runner.invoke(app, ["admin", "revoke-key", key_id])
        assert revoked.exit_code == 0 and revoked.stdout.split("\t")[-1].startswith("revoked ")
        with make_session_factory(make_engine(get_settings().database_url))() as session:
            assert authenticate(session, key) is None
        unknown = runner.invoke(app, ["admin", "revoke-key", "key_nope"])
        assert unknown.exit_code == 1 and "no API key with id 'key_nope'" in unknown.stderr
        assert runner.invoke(app, ["admin", "list-keys", "nobody"]).exit_code == 1
    finally:
        get_settings.cache_clear()
