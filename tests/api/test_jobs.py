"""Jobs over HTTP: validated creation, 202 + Location, reads, lists, cancel, events."""

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.api.routes.jobs import MAX_JOB_BODY_BYTES
from app.core.persistence.models import Job, JobEvent, utcnow
from app.main import create_app
from tests.support.files import mlp_checkpoint, safetensors_bytes
from tests.support.http import transfer_spec, uploaded_id


def create(api, tenant, spec, **headers):
    return api.post("/v1/jobs", json={"spec": spec}, headers={**tenant.headers, **headers})


def test_create_queues_dispatches_and_reads_back(api, tenant, dispatcher):
    spec = transfer_spec(api, tenant)
    response = create(api, tenant, spec)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["kind"], job["attempts"], job["error"], job["result"]) == \
        ("queued", "transfer", 0, None, None)
    assert job["spec"]["source"] == spec["source"] and job["spec"]["params"]["steps"] == 4
    assert job["spec"]["params"]["schedule"] == "cosine"  # defaults are filled in and stored
    assert dispatcher.dispatched == [job["id"]] and dispatcher.queues == [job["queue"]] == ["gpu"]
    assert api.get(f"/v1/jobs/{job['id']}", headers=tenant.headers).json() == job
    pinned = create(api, tenant, {**spec, "params": {"device": "cpu"}}).json()
    assert pinned["queue"] == "cpu" and dispatcher.queues[-1] == "cpu"  # chosen once, at creation
    events = api.get(f"/v1/jobs/{job['id']}/events", headers=tenant.headers).json()
    assert [e["type"] for e in events["data"]] == ["created"] and events["next_cursor"] is None


def test_spec_errors_name_the_field(api, tenant, dispatcher):
    bad = create(api, tenant, {"kind": "transfer", "arch": {"name": "mlp"}, "source": ["art_x"],
                               "targets": [{"seed": 1}], "train_data": "art_y", "typo": 1})
    body = bad.json()
    assert bad.status_code == 422 and body["code"] == "validation_error"
    fields = {e["field"] for e in body["errors"]}
    assert {"spec.source", "spec.typo"} <= fields
    bad_target = create(api, tenant, {"arch": {"name": "mlp"}, "source": ["a", "b"], "train_data": "c",
                                      "targets": [{"seed": 1}, {"seed": -1}]})
    assert "spec.targets[1].seed" in {e["field"] for e in bad_target.json()["errors"]}
    unknown = create(api, tenant, {"kind": "distill"})
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_kind"
    assert unknown.json()["errors"][0]["field"] == "spec.kind"
    assert dispatcher.dispatched == []


@pytest.mark.parametrize("kind", [["transfer"], {"name": "transfer"}, 3, None])
def test_a_kind_that_is_not_a_known_string_is_refused(api, tenant, dispatcher, kind):
    response = create(api, tenant, {"kind": kind})
    assert response.status_code == 422 and response.json()["code"] == "unknown_kind"
    assert response.json()["errors"][0]["field"] == "spec.kind"


def test_missing_and_wrong_kind_artifacts_are_refused(api, tenant, dispatcher):
    spec = transfer_spec(api, tenant)
    missing = create(api, tenant, {**spec, "eval_data": "art_" + "0" * 32})
    assert missing.status_code == 422 and missing.json()["code"] == "artifact_not_found"
    assert missing.json()["errors"] == [{"field": "spec.eval_data", "artifact": "art_" + "0" * 32,
                                         "message": f"no artifact with id {'art_' + '0' * 32!r}"}]
    swapped = create(api, tenant, {**spec, "train_data": spec["source"][0]})
    assert swapped.status_code == 422 and swapped.json()["code"] == "wrong_artifact_kind"
    assert swapped.json()["errors"][0]["field"] == "spec.train_data"


def test_checkpoint_mismatch_names_tensor_and_both_shapes(api, tenant, dispatcher):
    spec = transfer_spec(api, tenant)
    wider = uploaded_id(api, tenant, mlp_checkpoint(hidden=32))
    response = create(api, tenant, {**spec, "targets": [{"checkpoint": wider}]})
    body = response.json()
    assert response.status_code == 422 and body["code"] == "checkpoint_mismatch"
    assert body["errors"][0]["field"] == "spec.targets[0].checkpoint"
    assert body["errors"][0]["tensor"] == "0.bias"
    assert "[32]" in body["detail"] and "[16]" in body["detail"]


def test_data_shard_with_mismatched_example_counts_is_refused(api, tenant, dispatcher):
    spec = transfer_spec(api, tenant)
    bad = uploaded_id(api, tenant, safetensors_bytes({"inputs": ("F32", [10, 8]), "targets": ("I64", [9])}))
    response = create(api, tenant, {**spec, "eval_data": bad})
    assert response.status_code == 422 and response.json()["code"] == "data_mismatch"


def test_cancel_queued_at_once_running_cooperatively_finished_409(api, tenant, dispatcher, session_factory):
    spec = transfer_spec(api, tenant)
    queued = create(api, tenant, spec).json()
    cancelled = api.post(f"/v1/jobs/{queued['id']}/cancel", headers=tenant.headers).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    again = api.post(f"/v1/jobs/{queued['id']}/cancel", headers=tenant.headers)
    assert again.status_code == 409 and again.json()["code"] == "job_finished"

    running = create(api, tenant, spec).json()
    with session_factory() as session:  # what a worker's claim does
        session.execute(update(Job).where(Job.id == running["id"]).values(status="running", attempts=1))
        session.commit()
    cancelling = api.post(f"/v1/jobs/{running['id']}/cancel", headers=tenant.headers).json()
    assert (cancelling["status"], cancelling["cancel_requested"]) == ("cancelling", True)
    events = api.get(f"/v1/jobs/{running['id']}/events", headers=tenant.headers).json()["data"]
    assert [e["type"] for e in events] == ["created", "cancel_requested"]


def test_artifact_in_use_by_live_job_cannot_be_deleted(api, tenant, dispatcher):
    spec = transfer_spec(api, tenant)
    job = create(api, tenant, spec).json()
    refused = api.delete(f"/v1/artifacts/{spec['train_data']}", headers=tenant.headers)
    assert refused.status_code == 409 and refused.json()["code"] == "artifact_in_use"
    api.post(f"/v1/jobs/{job['id']}/cancel", headers=tenant.headers)
    assert api.delete(f"/v1/artifacts/{spec['train_data']}", headers=tenant.headers).status_code == 204


def test_list_filters_by_status_and_paginates(api, tenant, dispatcher):
    spec = transfer_spec(api, tenant)
    ids = [create(api, tenant, spec).json()["id"] for _ in range(3)]
    api.post(f"/v1/jobs/{ids[0]}/cancel", headers=tenant.headers)
    queued = api.get("/v1/jobs", params={"status": "queued"}, headers=tenant.headers).json()
    assert [j["id"] for j in queued["data"]] == [ids[2], ids[1]]
    first = api.get("/v1/jobs", params={"limit": 2}, headers=tenant.headers).json()
    rest = api.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]}, headers=tenant.headers).json()
    assert [j["id"] for j in first["data"] + rest["data"]] == ids[::-1] and rest["next_cursor"] is None
    assert api.get("/v1/jobs", params={"status": "bogus"}, headers=tenant.headers).status_code == 422


def test_a_list_row_carries_what_a_list_shows_not_the_whole_job(api, tenant, dispatcher):
    """Issue 28.5: a 50-job page is not 50 full specs, manifests and webhook secrets."""
    spec = transfer_spec(api, tenant)
    response = api.post("/v1/jobs", json={"spec": spec, "webhook": {"url": "https://ci.example/hook"}},
                        headers=tenant.headers)
    row = api.get("/v1/jobs", headers=tenant.headers).json()["data"][0]
    assert row["id"] == response.json()["id"] and "result" not in row and "webhook" not in row
    assert row["spec"] == {"kind": "transfer", "method": spec.get("method", "fgmt"),
                           "arch": {"name": spec["arch"]["name"]},
                           "targets": [{"checkpoint": None, "seed": 1, "trained": None}]}
    assert {"status", "progress", "attempts", "max_attempts", "error", "summary", "created_at"} <= row.keys()


def test_webhook_gets_a_secret_and_default_events(api, tenant, dispatcher):
    spec = transfer_spec(api, tenant)
    response = api.post("/v1/jobs", json={"spec": spec, "webhook": {"url": "https://ci.example/hook"}},
                        headers=tenant.headers)
    webhook = response.json()["webhook"]
    assert webhook["url"] == "https://ci.example/hook" and webhook["secret"].startswith("whsec_")
    assert webhook["events"] == ["job.succeeded", "job.failed", "job.cancelled"]
    bad = api.post("/v1/jobs", json={"spec": spec, "webhook": {"url": "ftp://x", "events": ["job.nope"]}},
                   headers=tenant.headers)
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"body.webhook.url", "body.webhook.events[0]"}


def test_a_broker_outage_leaves_the_job_queued(settings, tenant):
    down = settings.model_copy(update={"dispatcher": "celery", "broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down), raise_server_exceptions=False) as client:
        response = create(client, tenant, transfer_spec(client, tenant))
        assert response.status_code == 202 and response.json()["status"] == "queued"
        assert client.get(f"/v1/jobs/{response.json()['id']}", headers=tenant.headers).json()["status"] == "queued"


def test_explicit_permutation_spec_must_match_the_checkpoints(api, tenant, dispatcher):
    spec = transfer_spec(api, tenant)
    good = create(api, tenant, {**spec, "permutation_spec": {"0.weight": ["h", None], "0.bias": ["h"]}})
    assert good.status_code == 202, good.text
    unknown = create(api, tenant, {**spec, "permutation_spec": {"fc9.weight": ["h", None]}})
    assert unknown.status_code == 422 and unknown.json()["code"] == "permutation_spec_mismatch"
    assert unknown.json()["errors"][0]["tensor"] == "fc9.weight"
    rank = create(api, tenant, {**spec, "permutation_spec": {"0.bias": ["h", None]}})
    assert rank.status_code == 422 and "shape [16]" in rank.json()["detail"]


def test_worker_written_fields_show_in_the_job_resource(api, tenant, dispatcher, session_factory):
    job_id = create(api, tenant, transfer_spec(api, tenant)).json()["id"]
    with session_factory() as session:  # what a worker writes when it finishes
        session.execute(update(Job).where(Job.id == job_id).values(
            status="failed", attempts=2, progress_step=3, progress_total=4, error_code="non_finite_loss",
            error_message="loss became NaN at step 3", summary={"seconds": 1.5},
            result={"files": [_entry("best", 0, "art_2"), _entry("report", None, "art_3")]}))
        session.commit()
    job = api.get(f"/v1/jobs/{job_id}", headers=tenant.headers).json()
    assert (job["status"], job["attempts"], job["progress"]) == ("failed", 2, {"step": 3, "total": 4})
    assert job["error"] == {"code": "non_finite_loss", "message": "loss became NaN at step 3"}
    assert job["result"]["files"] == [_entry("best", 0, "art_2"), _entry("report", None, "art_3")]
    # the grouped views older readers use, built from the same entries
    assert (job["result"]["targets"], job["result"]["report"]) == ([{"best": "art_2"}], "art_3")
    assert job["summary"] == {"seconds": 1.5}


def _entry(role: str, target: int | None, artifact: str) -> dict:
    return {"role": role, "target": target, "path": f"{role}.bin", "sha256": "0" * 64, "size": 1,
            "metadata": {}, "artifact": artifact}


def test_events_page_in_order_with_a_cursor(api, tenant, dispatcher, session_factory):
    job_id = create(api, tenant, transfer_spec(api, tenant)).json()["id"]
    with session_factory() as session:
        session.add_all(JobEvent(job_id=job_id, type="progress", data={"step": s}, created_at=utcnow())
                        for s in range(1, 5))
        session.commit()
    url = f"/v1/jobs/{job_id}/events"
    first = api.get(url, params={"limit": 3}, headers=tenant.headers).json()
    assert [e["type"] for e in first["data"]] == ["created", "progress", "progress"]
    rest = api.get(url, params={"cursor": first["next_cursor"]}, headers=tenant.headers).json()
    assert [e["data"]["step"] for e in rest["data"]] == [3, 4] and rest["next_cursor"] is None
    ids = [e["id"] for e in first["data"] + rest["data"]]
    assert ids == sorted(ids)
    later = api.get(url, params={"cursor": ids[-1]}, headers=tenant.headers).json()
    assert later == {"data": [], "next_cursor": None}


def test_oversize_job_body_is_a_413_problem_declared_or_streamed(api, tenant):
    body = json.dumps({"spec": {"kind": "transfer", "pad": "x" * MAX_JOB_BODY_BYTES}}).encode()
    headers = {**tenant.headers, "Content-Type": "application/json"}
    declared = api.post("/v1/jobs", content=body, headers=headers)
    streamed = api.post("/v1/jobs", content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                        headers=headers)  # chunked: no Content-Length to check up front
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "payload_too_large"
        assert str(MAX_JOB_BODY_BYTES) in response.json()["detail"]


def test_problem_body_is_pinned(api, tenant):
    response = api.get("/v1/jobs/job_missing", headers=tenant.headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"type": "https://trajx.dev/problems/job_not_found", "title": "Job not found",
                               "status": 404, "detail": "no job with id 'job_missing'", "code": "job_not_found"}
