"""The database: engine and sessions, ORM models, migrations, outage classification, pagination."""
