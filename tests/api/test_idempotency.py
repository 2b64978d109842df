"""Idempotency-Key on both creates: same key and body replays, a different body is 422."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import make_tenant
from tests.support.files import mlp_checkpoint
from tests.support.http import stored_files, transfer_spec, upload


def test_job_retry_reattaches_and_different_body_is_refused(api, tenant):
    spec = transfer_spec(api, tenant)
    headers = {**tenant.headers, "Idempotency-Key": "ci-run-42"}
    first = api.post("/v1/jobs", json={"spec": spec}, headers=headers)
    retry = api.post("/v1/jobs", json={"spec": spec}, headers=headers)
    assert first.status_code == retry.status_code == 202
    assert retry.json()["id"] == first.json()["id"] and retry.headers["idempotent-replayed"] == "true"
    assert len(api.get("/v1/jobs", headers=tenant.headers).json()["data"]) == 1
    changed = api.post("/v1/jobs", json={"spec": {**spec, "method": "gmt"}}, headers=headers)
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"


def test_keys_are_per_tenant(api, tenant, session_factory):
    other = make_tenant(session_factory)
    mine = upload(api, tenant, mlp_checkpoint(), **{"Idempotency-Key": "k"}).json()
    theirs = upload(api, other, mlp_checkpoint(), **{"Idempotency-Key": "k"}).json()
    assert mine["id"] != theirs["id"]


def test_upload_retry_returns_the_original_artifact(api, tenant):
    content = mlp_checkpoint()
    first = upload(api, tenant, content, **{"Idempotency-Key": "up-1"})
    retry = upload(api, tenant, content, **{"Idempotency-Key": "up-1"})
    assert first.status_code == retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    other = upload(api, tenant, mlp_checkpoint(fill=7), **{"Idempotency-Key": "up-1"})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"


def test_a_refused_upload_keeps_no_bytes_but_never_drops_shared_ones(api, tenant, store):
    first = upload(api, tenant, mlp_checkpoint(), **{"Idempotency-Key": "up-1"}).json()
    shared = upload(api, tenant, mlp_checkpoint(fill=3)).json()
    before = stored_files(store)
    for content in (mlp_checkpoint(fill=7), mlp_checkpoint(fill=3)):  # new bytes, then bytes `shared` holds
        refused = upload(api, tenant, content, **{"Idempotency-Key": "up-1"})
        assert refused.status_code == 422 and refused.json()["code"] == "idempotency_key_reused"
        assert sorted(stored_files(store)) == sorted(before)
    for artifact in (first, shared):
        content = api.get(f"/v1/artifacts/{artifact['id']}/content", headers=tenant.headers)
        assert content.status_code == 200 and hashlib.sha256(content.content).hexdigest() == artifact["sha256"]


def test_concurrent_retries_create_one_job(api, tenant):
    spec = transfer_spec(api, tenant)
    headers = {**tenant.headers, "Idempotency-Key": "race"}
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: api.post("/v1/jobs", json={"spec": spec}, headers=headers), range(4)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1


def test_unusable_key_is_refused(api, tenant):
    response = upload(api, tenant, mlp_checkpoint(), **{"Idempotency-Key": "x" * 300})
    assert response.status_code == 422


def test_replaying_an_upload_key_after_its_artifact_was_deleted_stores_it_again(api, tenant):
    first = upload(api, tenant, mlp_checkpoint(), **{"Idempotency-Key": "up-1"})
    assert first.status_code == 201
    assert api.delete(f"/v1/artifacts/{first.json()['id']}", headers=tenant.headers).status_code == 204
    again = upload(api, tenant, mlp_checkpoint(), **{"Idempotency-Key": "up-1"})
    assert again.status_code == 201, again.text
    assert again.json()["id"] != first.json()["id"]
    content = api.get(f"/v1/artifacts/{again.json()['id']}/content", headers=tenant.headers)
    assert content.status_code == 200 and content.content == mlp_checkpoint()
    replay = upload(api, tenant, mlp_checkpoint(), **{"Idempotency-Key": "up-1"})
    assert replay.json()["id"] == again.json()["id"]  # the key now names the new artifact
