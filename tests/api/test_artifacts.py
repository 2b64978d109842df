"""Artifacts over HTTP: upload (raw, multipart), metadata, download with Range/ETag, dedup, delete."""

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from app.core.persistence.db import session_scope
from app.core.persistence.models import Tenant
from app.main import create_app
from tests.support.files import data_shard, mlp_checkpoint
from tests.support.http import stored_files, upload


@pytest.mark.parametrize("store_backend", ["local", "s3"])
def test_raw_upload_returns_tensor_table_and_round_trips_with_range(api, tenant, store):
    content = mlp_checkpoint()
    response = upload(api, tenant, content)
    assert response.status_code == 201, response.text
    artifact = response.json()
    assert artifact["id"].startswith("art_") and len(artifact["id"]) == 36
    assert artifact["sha256"] == hashlib.sha256(content).hexdigest()
    assert (artifact["size"], artifact["format"], artifact["kind"]) == (len(content), "safetensors", "checkpoint")
    assert {"name": "0.weight", "dtype": "F32", "shape": [16, 8]} in artifact["tensors"]

    assert api.get(f"/v1/artifacts/{artifact['id']}", headers=tenant.headers).json() == artifact
    whole = api.get(f"/v1/artifacts/{artifact['id']}/content", headers=tenant.headers)
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["etag"] == f'"{artifact["sha256"]}"'
    part = api.get(f"/v1/artifacts/{artifact['id']}/content", headers={**tenant.headers, "Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == content[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(content)}"
    cached = api.get(f"/v1/artifacts/{artifact['id']}/content",
                     headers={**tenant.headers, "If-None-Match": whole.headers["etag"]})
    assert cached.status_code == 304


def test_unsatisfiable_and_malformed_ranges_are_problems(api, tenant):
    artifact = upload(api, tenant, mlp_checkpoint()).json()
    url = f"/v1/artifacts/{artifact['id']}/content"
    beyond = api.get(url, headers={**tenant.headers, "Range": f"bytes={artifact['size']}-"})
    assert beyond.status_code == 416 and beyond.json()["code"] == "range_not_satisfiable"
    assert beyond.headers["content-range"] == f"bytes */{artifact['size']}"
    garbage = api.get(url, headers={**tenant.headers, "Range": "lines=1-2"})
    assert garbage.status_code == 400 and garbage.json()["code"] == "invalid_range"


def test_multipart_upload_takes_the_filename(api, tenant):
    content = data_shard()
    response = api.post("/v1/artifacts", headers=tenant.headers,
                        files={"file": ("train.safetensors", content, "application/octet-stream")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["kind"], body["size"]) == ("train.safetensors", "data", len(content))


@pytest.mark.parametrize("store_backend", ["local", "s3"])
def test_identical_bytes_are_stored_once_but_listed_per_upload(api, tenant, store):
    content = mlp_checkpoint()
    first = upload(api, tenant, content, name="a.safetensors").json()
    second = upload(api, tenant, content, name="b.safetensors").json()
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]
    assert len(stored_files(store)) == 1 and store.exists(first["sha256"])
    by_hash = api.get("/v1/artifacts", params={"sha256": first["sha256"]}, headers=tenant.headers).json()
    assert {a["id"] for a in by_hash["data"]} == {first["id"], second["id"]}


@pytest.mark.parametrize("store_backend", ["local", "s3"])
def test_delete_keeps_shared_blob_until_last_reference(api, tenant, store):
    content = mlp_checkpoint()
    first = upload(api, tenant, content).json()
    second = upload(api, tenant, content).json()
    assert api.delete(f"/v1/artifacts/{first['id']}", headers=tenant.headers).status_code == 204
    assert api.get(f"/v1/artifacts/{first['id']}", headers=tenant.headers).status_code == 404
    assert store.exists(first["sha256"])
    assert api.delete(f"/v1/artifacts/{second['id']}", headers=tenant.headers).status_code == 204
    assert not store.exists(first["sha256"])


def test_non_safetensors_and_json_uploads(api, tenant):
    other = upload(api, tenant, b"plain text notes", name="notes.txt").json()
    assert (other["format"], other["kind"], other["tensors"]) == ("other", "other", [])
    report = upload(api, tenant, b'{"accuracy": 0.9}', name="report.json").json()
    assert report["format"] == "json"
    broken = upload(api, tenant, b'{"accuracy": ', name="report.json")
    assert broken.status_code == 422 and broken.json()["code"] == "invalid_json"


def test_pagination_walks_every_artifact_once(api, tenant):
    ids = {upload(api, tenant, mlp_checkpoint(fill=i)).json()["id"] for i in range(5)}
    seen, cursor = [], None
    while True:
        page = api.get("/v1/artifacts", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                       headers=tenant.headers).json()
        seen += [a["id"] for a in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and set(seen) == ids
    assert seen == sorted(seen, reverse=True)  # newest first


@pytest.mark.parametrize("store_backend", ["local", "s3"])
def test_a_database_failure_while_recording_leaves_no_blob(settings, tenant, store, session_factory):
    app = create_app(settings.model_copy(update={"auth_cache_seconds": 60}))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/artifacts", headers=tenant.headers).status_code == 200  # the key is now cached
        with session_scope(session_factory) as session:
            session.execute(delete(Tenant).where(Tenant.id == tenant.id))
        # The artifact row's tenant foreign key now fails at the database, after the blob is in place.
        response = upload(client, tenant, mlp_checkpoint())
    app.state.services.engine.dispose()
    assert response.status_code == 500
    assert stored_files(store) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("store_backend", ["s3"])
def test_downloads_redirect_to_a_presigned_url_when_configured(settings, tenant):
    import httpx

    app = create_app(settings.model_copy(update={"s3_presign_seconds": 60}))
    content = mlp_checkpoint()
    with TestClient(app) as client:
        artifact = upload(client, tenant, content).json()
        response = client.get(f"/v1/artifacts/{artifact['id']}/content", headers=tenant.headers,
                              follow_redirects=False)
    app.state.services.engine.dispose()
    assert response.status_code == 307 and response.headers["etag"] == f'"{artifact["sha256"]}"'
    direct = httpx.get(response.headers["location"])  # straight from the object store
    assert direct.status_code == 200 and direct.content == content
