"""Malformed ids, cursors and strings get 404 or 422 problems on both backends, never a 500.

PostgreSQL refuses NUL characters in text, so each of these once reached the database
and came back as a psycopg error; they are now answered before any query.
"""

import pytest
from fastapi import Request
from sqlalchemy import text

from tests.support.files import mlp_checkpoint
from tests.support.http import transfer_spec, upload

MALFORMED_IDS = ["%00", "a%00b", "art_" + "0" * 31 + "%00", "job_" + "0" * 31 + "%00", "art_" + "A" * 32]
ID_ROUTES = [("GET", "/v1/jobs/{}", "job_not_found"), ("GET", "/v1/jobs/{}/events", "job_not_found"),
             ("POST", "/v1/jobs/{}/cancel", "job_not_found"), ("GET", "/v1/artifacts/{}", "artifact_not_found"),
             ("GET", "/v1/artifacts/{}/content", "artifact_not_found"),
             ("DELETE", "/v1/artifacts/{}", "artifact_not_found")]


def test_malformed_ids_are_not_found(api, tenant):
    for method, template, code in ID_ROUTES:
        for ident in MALFORMED_IDS:
            response = api.request(method, template.format(ident), headers=tenant.headers)
            assert (response.status_code, response.json()["code"]) == (404, code), (method, template, ident)


def test_malformed_cursors_are_validation_errors(api, tenant):
    for path in ("/v1/jobs", "/v1/artifacts"):
        for cursor in ("\x00", "art_\x00", "job_" + "0" * 31 + "\x00", "job_x", "art_" + "g" * 32):
            response = api.get(path, params={"cursor": cursor}, headers=tenant.headers)
            assert response.status_code == 422 and response.json()["code"] == "validation_error", (path, cursor)
            assert response.json()["errors"][0]["field"] == "query.cursor"


def test_malformed_artifact_refs_in_a_spec_are_not_found(api, tenant):
    spec = transfer_spec(api, tenant)
    response = api.post("/v1/jobs", json={"spec": {**spec, "source": [spec["source"][0], "art_%"]}},
                        headers=tenant.headers)
    assert response.status_code == 422 and response.json()["code"] == "artifact_not_found"
    assert response.json()["errors"] == [{"field": "spec.source[1]", "artifact": "art_%",
                                          "message": "no artifact with id 'art_%'"}]


def test_nul_in_stored_strings_is_refused_naming_the_field(api, tenant):
    by_name = upload(api, tenant, mlp_checkpoint(), name="a\x00.safetensors")
    assert by_name.status_code == 422 and by_name.json()["errors"][0]["field"] == "name"
    form = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a\x00.safetensors"\r\n\r\n'
            + mlp_checkpoint() + b"\r\n--b--\r\n")
    by_filename = api.post("/v1/artifacts", content=form,
                           headers={**tenant.headers, "Content-Type": "multipart/form-data; boundary=b"})
    assert by_filename.status_code == 422 and by_filename.json()["errors"][0]["field"] == "name"
    by_key = upload(api, tenant, mlp_checkpoint(), **{"Idempotency-Key": "k\x00"})
    assert by_key.status_code == 422 and by_key.json()["errors"][0]["field"] == "Idempotency-Key"
    spec = transfer_spec(api, tenant)
    for url in ("http://example.com/\x00hook", "http://exa\x00mple.com/"):
        job = api.post("/v1/jobs", json={"spec": spec, "webhook": {"url": url}}, headers=tenant.headers)
        assert job.status_code == 422 and job.json()["errors"][0]["field"] == "body.webhook.url", url


def test_a_webhook_url_longer_than_its_column_is_refused(api, tenant):
    spec = transfer_spec(api, tenant)
    url = "https://example.com/" + "a" * 2040
    response = api.post("/v1/jobs", json={"spec": spec, "webhook": {"url": url}}, headers=tenant.headers)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "body.webhook.url"


def test_nul_inside_a_spec_is_refused_naming_the_field(api, tenant):
    spec = transfer_spec(api, tenant)
    for config, field in (({"x": "\x00"}, "spec.arch.config.x"), ({"x\x00": 1}, "spec.arch.config")):
        response = api.post("/v1/jobs", json={"spec": {**spec, "arch": {"name": "mlp", "config": config}}},
                            headers=tenant.headers)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == field, response.text
    source = api.post("/v1/jobs", json={"spec": {**spec, "source": [spec["source"][0], "art_\x00"]}},
                      headers=tenant.headers)
    assert source.status_code == 422 and source.json()["errors"][0]["field"] == "spec.source[1]"


@pytest.fixture
def database_error_route(api_app):
    """A route whose query PostgreSQL refuses with a DataError (SQLite casts silently)."""
    async def cast_text_to_integer(request: Request) -> dict:
        services = request.app.state.services
        value = await services.db.run(lambda s: s.scalar(text("SELECT CAST(:v AS integer)"), {"v": "x"}))
        return {"value": value}

    api_app.add_api_route("/test/data-error", cast_text_to_integer)
    return "/test/data-error"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_database_data_error_is_a_422_problem_and_logged(api, database_error_route, caplog):
    response = api.get(database_error_route)
    assert response.status_code == 422 and response.json()["code"] == "invalid_value"
    assert response.headers["content-type"] == "application/problem+json"
    assert any(r.name == "app.api.problems" and "DataError" in r.getMessage() for r in caplog.records)
