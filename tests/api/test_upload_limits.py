"""Upload limits are enforced while streaming; aborted or oversize uploads leave nothing."""

import socket
import time

import httpx
import pytest

from app.main import create_app
from tests.support.files import mlp_checkpoint
from tests.support.http import stored_files, upload
from tests.support.live_server import serve


@pytest.fixture
def database_url(sqlite_url) -> str:
    return sqlite_url  # streaming limits do not depend on the database backend


@pytest.fixture
def small_limit_api(settings):
    from fastapi.testclient import TestClient

    app = create_app(settings.model_copy(update={"max_upload_bytes": 4096}))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    app.state.services.engine.dispose()


def test_declared_oversize_is_refused_before_reading(small_limit_api, tenant, store):
    response = upload(small_limit_api, tenant, b"x" * 5000, name="big.bin")
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert stored_files(store) == []


def test_undeclared_oversize_is_cut_off_while_streaming(small_limit_api, tenant, store):
    def chunks():  # a generator body goes out chunked, without Content-Length
        for _ in range(10):
            yield b"y" * 1000

    response = small_limit_api.post("/v1/artifacts", params={"name": "big.bin"}, content=chunks(),
                                     headers=tenant.headers)
    assert response.status_code == 413
    assert stored_files(store) == []


def test_multipart_oversize_is_cut_off(small_limit_api, tenant, store):
    response = small_limit_api.post("/v1/artifacts", headers=tenant.headers,
                                    files={"file": ("big.bin", b"z" * 8000)})
    assert response.status_code == 413 and stored_files(store) == []


def test_aborted_upload_leaves_no_artifact_and_no_file(api_app, tenant, store):
    with serve(api_app) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"POST /v1/artifacts?name=x.safetensors HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + tenant.key.encode() + b"\r\n"
                         b"Content-Length: 100000\r\n\r\n" + mlp_checkpoint()[:500])
            time.sleep(0.2)  # the server is now mid-body
        deadline = time.monotonic() + 5
        while stored_files(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored_files(store) == []
        listed = httpx.get(f"{base_url}/v1/artifacts", headers=tenant.headers).json()
        assert listed["data"] == []


def test_broken_multipart_bodies_are_problems(api, tenant, store):
    no_boundary = api.post("/v1/artifacts", content=b"--x\r\n",
                           headers={**tenant.headers, "Content-Type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and no_boundary.json()["code"] == "invalid_multipart"
    no_file = api.post("/v1/artifacts", headers=tenant.headers, data={"name": "x"},
                       files={"other": (None, b"v")})
    assert no_file.status_code == 422 and no_file.json()["code"] == "invalid_multipart"
    raw_without_name = api.post("/v1/artifacts", content=b"abc", headers=tenant.headers)
    assert raw_without_name.status_code == 422 and raw_without_name.json()["code"] == "missing_name"
    empty = api.post("/v1/artifacts", params={"name": "e"}, content=b"", headers=tenant.headers)
    assert empty.status_code == 422 and empty.json()["code"] == "empty_upload"
    assert stored_files(store) == []
