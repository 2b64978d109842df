"""Run the Alembic chain from code: `upgrade(url)` brings a database to head.

Used on start-up of the embedded default (`auto_migrate`), by the compose migration
step (`python -m app.core.persistence.migrate`) and by the tests.
"""

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url` that leaves the caller's logging alone."""
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database at `database_url` up to `revision` (idempotent)."""
    command.upgrade(alembic_config(database_url), revision)


def main() -> None:
    from app.core.settings import get_settings

    upgrade(get_settings().database_url)
    print("database migrated to head", file=sys.stderr)


if __name__ == "__main__":
    main()
