"""Ops endpoints, request ids, metrics, and the API process staying free of torch."""

import json
import logging
import subprocess
import sys

from app.core.logs import JsonFormatter
from tests.support.files import mlp_checkpoint
from tests.support.http import upload


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz").json()
    assert ready.pop("storage_free_bytes") > 0
    assert ready == {"status": "ready", "database": "ok", "storage": "ok"}


def test_low_free_space_fails_readiness_and_refuses_uploads_with_507(settings, tenant, store):
    from fastapi.testclient import TestClient

    from app.main import create_app

    free = store.free_bytes()
    starved = settings.model_copy(update={"storage_min_free_bytes": 2 * free})
    with TestClient(create_app(starved)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "storage_full"
        refused = upload(client, tenant, mlp_checkpoint())
        assert refused.status_code == 507 and refused.json()["code"] == "storage_full"
        metrics = client.get("/metrics").text
    gauge = next(line for line in metrics.splitlines() if line.startswith("trajx_storage_free_bytes "))
    assert abs(float(gauge.split()[1]) - free) < 0.1 * free
    assert [p for p in store.root.rglob("*") if p.is_file()] == []  # nothing kept


def test_readiness_fails_with_a_problem_when_the_database_is_gone(settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    unreachable = settings.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:9/none"})
    with TestClient(create_app(unreachable)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["code"] == "database_unavailable"
        assert client.get("/healthz").status_code == 200


def test_metrics_without_a_database_serve_the_request_metrics(settings, caplog):
    from fastapi.testclient import TestClient

    from app.main import create_app

    unreachable = settings.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:9/none"})
    with TestClient(create_app(unreachable)) as client:
        client.get("/healthz")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert 'trajx_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in response.text
    assert "trajx_jobs" not in response.text and "trajx_artifact_bytes_stored" not in response.text
    assert any(r.name == "app.api.observability" and "database" in r.getMessage() for r in caplog.records)


def test_metrics_count_requests_jobs_and_bytes(api, tenant):
    content = mlp_checkpoint()
    upload(api, tenant, content)
    upload(api, tenant, content, name="same-bytes.safetensors")
    text = api.get("/metrics").text
    assert f"trajx_artifact_bytes_stored {float(len(content))}" in text
    assert 'trajx_jobs{status="queued"} 0.0' in text
    assert 'trajx_job_fault_events_total{type="storage_full"} 0.0' in text  # what an operator alerts on
    assert 'trajx_http_requests_total{method="POST",route="/v1/artifacts",status="201"} 2.0' in text


def test_metrics_need_the_token_when_one_is_set(settings, tenant):
    from fastapi.testclient import TestClient

    from app.main import create_app

    token = "m" * 32
    with TestClient(create_app(settings.model_copy(update={"metrics_token": token}))) as client:
        for headers in ({}, tenant.headers, {"Authorization": f"Bearer {token}x"}, {"Authorization": token}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401 and refused.json()["code"] == "unauthorized", headers
            assert "trajx_jobs" not in refused.text
        allowed = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200 and "trajx_jobs" in allowed.text


def test_request_id_is_echoed_and_logged_as_json(api, caplog):
    with caplog.at_level(logging.INFO, logger="app.access"):
        response = api.get("/healthz", headers={"X-Request-ID": "req-123"})
    assert response.headers["x-request-id"] == "req-123"
    generated = api.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    access = next(r for r in caplog.records if r.name == "app.access")
    line = json.loads(JsonFormatter().format(access))
    assert line["request_id"] == "req-123" and line["status"] == 200 and line["route"] == "/healthz"


def test_unknown_route_and_method_are_problems(api):
    missing = api.get("/v1/nothing")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert set(missing.json()) >= {"type", "title", "status", "detail", "code"}
    wrong_method = api.put("/v1/jobs")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"


def test_api_process_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "import app.core.tenancy.admin, app.core.storage.artifacts, app.core.persistence.migrate\n"
        "from app.main import create_app\n"
        "from app.core.settings import Settings\n"
        f"create_app(Settings(dispatcher='celery', database_url='sqlite:///{tmp_path}/x.db',"
        f" storage_dir='{tmp_path}/store'))\n"
        "print('torch' in sys.modules, 'safetensors' in sys.modules, 'numpy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False", "False"]


def test_openapi_documents_auth_and_problem_responses_on_every_v1_operation(api):
    schema = api.get("/openapi.json").json()
    assert "Problem" in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            assert operation.get("security"), (method, path)
            unauthorized = operation["responses"]["401"]["content"]
            assert "application/problem+json" in unauthorized, (method, path)


def test_every_documented_error_is_a_problem_and_only_a_problem(api):
    schema = api.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(schema)
    assert schema["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail", "code"]
    documented = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    documented += 1
                    assert response["content"] == {"application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}}}, (method, path, status)
    assert documented >= 25
