"""Issue 14: per-tenant limits answer at once: 429 for too many queued jobs, 403 past the
storage quota; other tenants are not affected."""

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_tenant
from tests.support.files import mlp_checkpoint
from tests.support.http import transfer_spec, upload


@pytest.fixture
def limited(settings, request):
    """An API with the limits the test parametrizes it with."""
    with TestClient(create_app(settings.model_copy(update=request.param)), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("limited", [{"tenant_max_queued_jobs": 2}], indirect=True)
def test_queued_jobs_past_the_limit_get_429(limited, tenant, session_factory):
    spec = transfer_spec(limited, tenant)
    for _ in range(2):
        assert limited.post("/v1/jobs", json={"spec": spec}, headers=tenant.headers).status_code == 202
    refused = limited.post("/v1/jobs", json={"spec": spec}, headers=tenant.headers)
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_queued_jobs"
    assert refused.headers["retry-after"].isdigit()
    other = make_tenant(session_factory)
    assert limited.post("/v1/jobs", json={"spec": transfer_spec(limited, other)},
                        headers=other.headers).status_code == 202


@pytest.mark.parametrize("limited", [{"tenant_max_stored_bytes": 3 * len(mlp_checkpoint()) + 10}], indirect=True)
def test_uploads_past_the_storage_quota_get_403(limited, tenant):
    for fill in range(3):
        assert upload(limited, tenant, mlp_checkpoint(fill=fill), name=f"{fill}.safetensors").status_code == 201
    refused = upload(limited, tenant, mlp_checkpoint(fill=9))
    assert refused.status_code == 403 and refused.json()["code"] == "storage_quota_exceeded"
    listed = limited.get("/v1/artifacts", headers=tenant.headers).json()["data"]
    assert len(listed) == 3
    assert limited.delete(f"/v1/artifacts/{listed[0]['id']}", headers=tenant.headers).status_code == 204
    assert upload(limited, tenant, mlp_checkpoint(fill=9)).status_code == 201
