"""Auth and tenancy: bearer keys, hashed at rest; another tenant's ids answer 404."""

from sqlalchemy import select, update

from app.core.persistence.models import ApiKey, utcnow
from app.core.tenancy.auth import hash_key
from tests.conftest import make_tenant
from tests.support.files import mlp_checkpoint
from tests.support.http import transfer_spec, uploaded_id


def test_missing_malformed_and_unknown_keys_are_401_problems(api):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer trx_nope"}):
        response = api.get("/v1/jobs", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_keys_are_stored_as_hashes_and_revocation_takes_effect(api, tenant, session_factory):
    assert tenant.key.startswith("trx_") and len(tenant.key) == 47
    with session_factory() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant.id))
        assert row.key_hash == hash_key(tenant.key) and tenant.key not in (row.prefix, row.key_hash)
        assert tenant.key.startswith(row.prefix)
    assert api.get("/v1/jobs", headers=tenant.headers).status_code == 200
    with session_factory() as session:
        session.execute(update(ApiKey).where(ApiKey.tenant_id == tenant.id).values(revoked_at=utcnow()))
        session.commit()
    assert api.get("/v1/jobs", headers=tenant.headers).status_code == 401


def test_other_tenants_artifacts_and_jobs_are_invisible(api, tenant, session_factory):
    intruder = make_tenant(session_factory)
    spec = transfer_spec(api, tenant)
    job = api.post("/v1/jobs", json={"spec": spec}, headers=tenant.headers).json()
    artifact = spec["source"][0]
    for method, url in (("GET", f"/v1/artifacts/{artifact}"), ("GET", f"/v1/artifacts/{artifact}/content"),
                        ("DELETE", f"/v1/artifacts/{artifact}"), ("GET", f"/v1/jobs/{job['id']}"),
                        ("POST", f"/v1/jobs/{job['id']}/cancel"), ("GET", f"/v1/jobs/{job['id']}/events")):
        response = api.request(method, url, headers=intruder.headers)
        assert response.status_code == 404, (method, url)
    assert api.get("/v1/artifacts", headers=intruder.headers).json()["data"] == []
    assert api.get("/v1/jobs", headers=intruder.headers).json()["data"] == []
    # Referencing someone else's artifact in a spec is the same as referencing nothing.
    own = uploaded_id(api, intruder, mlp_checkpoint())
    stolen = api.post("/v1/jobs", json={"spec": {**spec, "source": [own, artifact]}}, headers=intruder.headers)
    assert stolen.status_code == 422 and stolen.json()["code"] == "artifact_not_found"
    assert [e["field"] for e in stolen.json()["errors"]] == ["spec.source[1]", "spec.train_data"]
    # `own` has the very bytes of `artifact`: a hash lookup still finds only the caller's upload.
    sha = api.get(f"/v1/artifacts/{artifact}", headers=tenant.headers).json()["sha256"]
    found = api.get("/v1/artifacts", params={"sha256": sha}, headers=intruder.headers).json()["data"]
    assert [a["id"] for a in found] == [own]


def test_key_cache_serves_hits_until_expiry(monkeypatch):
    from app.core.tenancy import auth
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    cache = auth.KeyCache(ttl_seconds=10)
    cache.put("trx_a", "ten_1")
    assert cache.get("trx_a") == "ten_1" and cache.get("trx_b") is None
    now[0] += 11
    assert cache.get("trx_a") is None
    disabled = auth.KeyCache(ttl_seconds=0)
    disabled.put("trx_a", "ten_1")
    assert disabled.get("trx_a") is None
