"""TRAJX_REQUIRE_SERVICES=1 (CI) turns a missing PostgreSQL or Redis from a skip into a failure."""

import pytest

from tests.conftest import service_unavailable


def test_a_missing_service_skips_by_default(monkeypatch):
    monkeypatch.delenv("TRAJX_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is down"):
        service_unavailable("PostgreSQL is down")


def test_a_missing_service_fails_when_services_are_required(monkeypatch):
    monkeypatch.setenv("TRAJX_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is down.*TRAJX_REQUIRE_SERVICES"):
        service_unavailable("PostgreSQL is down")
