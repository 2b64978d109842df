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
