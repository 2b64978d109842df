"""Job names and labels (create, PATCH, shown), list filters, artifact filters, signed
download links, the queue and usage views, and the API reference served without a CDN.
On SQLite and PostgreSQL (the `api` fixture runs on both)."""

import hashlib

from tests.support.files import mlp_checkpoint
from tests.support.http import transfer_spec, uploaded_id


def create(api, tenant, spec, **extra):
    response = api.post("/v1/jobs", json={"spec": spec, **extra}, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return response.json()


def listed(api, tenant, **params) -> list[str]:
    response = api.get("/v1/jobs", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["data"]]


def test_name_and_labels_are_kept_edited_and_filtered(api, tenant):
    spec = transfer_spec(api, tenant)
    first = create(api, tenant, spec, name="ResNet seed 3 (v2 backbone)", labels=["baseline", "lr:0.1", "baseline", "sweepxa"])
    assert first["name"] == "ResNet seed 3 (v2 backbone)" and first["labels"] == ["baseline", "lr:0.1", "sweepxa"]
    second = create(api, tenant, {**spec, "method": "naive"}, labels=["sweep_a"])
    plain = create(api, tenant, spec)
    assert plain["name"] is None and plain["labels"] == []

    assert listed(api, tenant, label="baseline") == [first["id"]]
    assert listed(api, tenant, label="sweep_a") == [second["id"]]  # LIKE's `_` is literal: not "sweepxa"
    assert listed(api, tenant, q="%") == []
    assert listed(api, tenant, label="base") == []  # a label matches whole, not a part of one
    assert listed(api, tenant, q="seed 3") == [first["id"]] and listed(api, tenant, q="RESNET") == [first["id"]]
    assert listed(api, tenant, method="naive") == [second["id"]]
    assert set(listed(api, tenant, method="fgmt", kind="transfer", arch="mlp")) == {first["id"], plain["id"]}
    assert listed(api, tenant, arch="resnet20") == [] and listed(api, tenant, kind="average") == []

    patched = api.patch(f"/v1/jobs/{plain['id']}", json={"name": "renamed", "labels": ["baseline"]},
                        headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "renamed" and patched.json()["spec"] == plain["spec"]
    assert set(listed(api, tenant, label="baseline")) == {first["id"], plain["id"]}
    # Only the fields sent change; null clears the name.
    cleared = api.patch(f"/v1/jobs/{plain['id']}", json={"name": None}, headers=tenant.headers).json()
    assert cleared["name"] is None and cleared["labels"] == ["baseline"]
    assert api.get(f"/v1/jobs/{first['id']}", headers=tenant.headers).json()["name"] == first["name"]


def test_bad_names_labels_and_filters_are_refused_with_the_field(api, tenant, tenant_id):
    spec = transfer_spec(api, tenant)
    for extra, field in (({"labels": ["has space"]}, "labels"), ({"name": "a\nb"}, "name"),
                         ({"labels": [f"l{i}" for i in range(21)]}, "labels")):
        response = api.post("/v1/jobs", json={"spec": spec, **extra}, headers=tenant.headers)
        assert response.status_code == 422, response.text
        assert field in response.text
    job = create(api, tenant, spec)
    response = api.patch(f"/v1/jobs/{job['id']}", json={"status": "succeeded"}, headers=tenant.headers)
    assert response.status_code == 422
    assert api.get("/v1/jobs", params={"label": "no spaces"}, headers=tenant.headers).status_code == 422
    assert api.patch("/v1/jobs/job_00000000000000000000000000000000", json={"name": "x"},
                     headers=tenant.headers).status_code == 404


def test_artifact_filters_usage_and_signed_download_link(api, tenant):
    content = mlp_checkpoint(fill=7)
    checkpoint = uploaded_id(api, tenant, content, "seed7.safetensors")
    get = lambda **params: [a["id"] for a in api.get("/v1/artifacts", params=params, headers=tenant.headers)
                            .json()["data"]]
    assert get(name="SEED7") == [checkpoint] and get(kind="data") == [] and get(produced=True) == []
    assert checkpoint in get(produced=False, kind="checkpoint")

    usage = api.get("/v1/usage", headers=tenant.headers).json()
    assert usage["stored_bytes"] == len(content) and usage["max_stored_bytes"] is None

    link = api.post(f"/v1/artifacts/{checkpoint}/link", headers=tenant.headers)
    assert link.status_code == 200, link.text
    url = link.json()["url"]
    assert url.startswith(f"/downloads/{checkpoint}?token=")
    fetched = api.get(url)  # no Authorization header
    assert fetched.status_code == 200 and hashlib.sha256(fetched.content).digest() == hashlib.sha256(content).digest()
    assert "attachment" in fetched.headers["content-disposition"]
    other = uploaded_id(api, tenant, mlp_checkpoint(fill=8))
    refused = api.get(url.replace(checkpoint, other))  # a link is for its artifact only
    assert refused.status_code == 403 and refused.json()["code"] == "invalid_link"
    assert api.get(url[:-3] + "abc").status_code == 403
    assert api.get(url[:-3] + "äbc").status_code == 403  # any text in the token is a 403, not a 500


def test_queue_view_gives_each_queued_job_a_position_and_a_reason(api, tenant):
    spec = transfer_spec(api, tenant)
    jobs = [create(api, tenant, spec)["id"] for _ in range(2)]
    queue = api.get("/v1/queue", headers=tenant.headers).json()
    assert [q["id"] for q in queue["queued"]] == jobs
    assert [q["position"] for q in queue["queued"]] == [1, 2]
    assert "1 queued job" in queue["queued"][1]["reason"]
    assert queue["workers"] == [] and queue["running_jobs"] == 0


def test_api_reference_is_served_from_the_package(api):
    page = api.get("/docs")
    assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert api.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert api.get("/redoc").status_code == 404
