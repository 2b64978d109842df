"""The dashboard in a real browser: sign in, jobs list, a job's live charts, cancel, tenancy."""

import hashlib
import re
import time

import pytest

from tests.dashboard.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def points(page, target: int, metric: str = "accuracy") -> int:
    """Points with a value in target `target`'s `metric` chart (0 before the chart exists)."""
    value = page.locator(f"[data-target='{target}'] .chart[data-metric='{metric}']").first
    return int(value.get_attribute("data-points")) if value.count() else 0


def wait_until(page, condition, timeout: float = 60.0) -> None:
    """Poll `condition()` from Python: the page's CSP forbids the eval `wait_for_function` needs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(100)


def test_finished_job_shows_one_point_per_step_per_target(page, client, inputs, server, tmp_path):
    job = client.wait(client.create_job(inputs.spec(steps=6, targets=2)).id, timeout=180)
    assert job.status == "succeeded", job.error

    sign_in(page, server.api_key)
    row = page.locator(f"tr[data-job='{job.id}']")
    assert row.locator("[data-status]").inner_text() == "succeeded"
    assert "fgmt" in row.inner_text() and "mlp" in row.inner_text()
    row.locator("a").click()
    page.wait_for_selector("#results tr[data-artifact]")
    wait_until(page, lambda: page.locator("[data-target][data-points='6']").count() == 2)
    for target in (0, 1):
        assert [points(page, target, metric) for metric in ("accuracy", "objective", "seconds")] == [6, 6, 6]
    # One canvas per chart: uPlot really drew them.
    assert page.locator("#charts canvas").count() == 6
    assert page.locator("#results tr[data-artifact]").count() == len(job.result_files())
    assert page.locator("#timeline tr[data-event='succeeded']").count() == 1
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)
    assert (tmp_path / "job.png").stat().st_size > 10_000

    with page.expect_download() as download:
        page.locator("#results tr", has_text="report.json").locator("button").click()
    saved = tmp_path / "report.json"
    download.value.save_as(saved)
    assert '"targets"' in saved.read_text()
    assert page.console.errors == []


def test_running_job_chart_grows_and_cancel_from_the_page(page, client, inputs, server):
    job = client.create_job(inputs.spec(steps=1000))
    sign_in(page, server.api_key)
    page.goto(f"/#/jobs/{job.id}")
    page.wait_for_selector("[data-fact='status'] [data-status='running']")
    wait_until(page, lambda: points(page, 0) >= 1)
    first = points(page, 0)
    wait_until(page, lambda: points(page, 0) > first)
    assert client.get_job(job.id).status == "running"  # it grew while running, not from a final report
    # Live, too, one point per step: the throttled progress events carry every step since the last.
    shown, last_step = page.locator("[data-target='0']").evaluate(
        "frame => [Number(frame.dataset.points), Number(frame.dataset.lastStep)]")
    assert shown == last_step > first

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.wait_for_selector("[data-fact='status'] [data-status='cancelled']", timeout=60_000)
    assert client.get_job(job.id).status == "cancelled"
    # The status fact and the timeline are fed separately: wait for the event's row too.
    page.wait_for_selector("#timeline tr[data-event='cancel_requested']")
    assert page.locator("#timeline tr[data-event='cancel_requested']").count() == 1
    assert page.is_hidden("#cancel")
    assert page.console.errors == []


def test_jobs_list_filters_by_status_and_pages(page, client, inputs, server):
    for _ in range(3):
        client.cancel(client.create_job(inputs.spec(steps=1000)).id)
    sign_in(page, server.api_key)
    page.select_option("#status-filter", "cancelled")
    page.wait_for_url("**/#/jobs?status=cancelled")
    # The unfiltered list may still be on the page for a moment: wait for the filtered one.
    statuses = lambda: page.locator("tr[data-job] [data-status]").all_inner_texts()
    wait_until(page, lambda: statuses() and set(statuses()) == {"cancelled"})

    page.goto("/#/jobs?status=cancelled&limit=2")  # pages follow the API's cursors
    ids = lambda: page.locator("tr[data-job]").evaluate_all("rows => rows.map(r => r.dataset.job)")
    wait_until(page, lambda: len(ids()) == 2)
    first = ids()
    assert page.is_disabled("#prev-page") and page.is_enabled("#next-page")
    page.click("#next-page")
    wait_until(page, lambda: ids() != first)
    second = ids()
    assert second and not set(second) & set(first) and max(second) < min(first)  # older, newest first
    page.click("#prev-page")
    wait_until(page, lambda: ids() == first)
    assert page.console.errors == []


def test_sign_in_is_refused_for_a_wrong_key_and_the_key_never_reaches_a_url(page, server):
    page.goto("/")
    page.fill("#api-key", "trx_not_a_key")
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('refused')")
    assert page.evaluate("sessionStorage.length") == 0

    requests = []
    page.on("request", lambda request: requests.append(request.url))
    sign_in(page, server.api_key)
    assert page.evaluate("sessionStorage.getItem('trajx.apiKey')") == server.api_key
    assert requests and not any(server.api_key in url for url in requests)
    assert page.evaluate("localStorage.length") == 0


def test_another_tenants_job_is_not_reachable(page, client, inputs, other_tenant):
    job = client.create_job(inputs.spec(steps=2))
    sign_in(page, other_tenant.key)
    page.wait_for_selector("#no-jobs")  # the list came back empty: none of the first tenant's jobs
    assert page.locator(f"tr[data-job='{job.id}']").count() == 0
    page.goto(f"/#/jobs/{job.id}")
    page.wait_for_selector("#view-error")
    assert "no job with id" in page.inner_text("#view-error")
    page.click("text=Artifacts")
    page.wait_for_selector("#no-artifacts")


def test_page_is_served_with_a_content_security_policy(server):
    import httpx

    response = httpx.get(f"{server.url}/")
    assert response.status_code == 200 and "<main id=\"view\">" in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert httpx.get(f"{server.url}/dashboard/vendor/uplot/uPlot.iife.min.js").status_code == 200


def test_artifacts_page_lists_uploads_and_downloads_one(page, client, inputs, server, tmp_path):
    sign_in(page, server.api_key)
    page.click("text=Artifacts")
    row = page.locator(f"tr[data-artifact='{inputs.train}']")
    row.wait_for()
    assert "train.safetensors" in row.inner_text() and "data" in row.inner_text()
    with page.expect_download() as download:
        row.locator("button").click()
    saved = tmp_path / "train.safetensors"
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == client.get_artifact(inputs.train).sha256
    assert page.console.errors == []


def test_failed_job_shows_its_error_code(page, client, inputs, server):
    job = client.wait(client.create_job({**inputs.spec(steps=2), "train_data": inputs.bad_train}).id, timeout=120)
    assert job.status == "failed"
    sign_in(page, server.api_key)
    page.goto(f"/#/jobs/{job.id}")
    page.wait_for_selector("#job-error")
    assert page.get_attribute("#job-error code", "data-code") == job.error.code
    assert job.error.message[:40] in page.inner_text("#job-error")
    page.wait_for_selector("#timeline tr[data-event='failed']")  # the timeline fills from the stream
    assert page.is_hidden("#cancel") and page.locator("#timeline tr[data-event='failed']").count() == 1
    assert page.console.errors == []


def test_jobs_list_follows_a_live_job_to_its_end(page, client, inputs, server):
    job = client.create_job(inputs.spec(steps=8))
    sign_in(page, server.api_key)
    status = page.locator(f"tr[data-job='{job.id}'] [data-status]")
    status.wait_for()
    assert status.inner_text() in {"queued", "running", "succeeded"}
    # The list refreshes itself while a listed job is live; no reload here.
    page.wait_for_selector(f"tr[data-job='{job.id}'] [data-status='succeeded']", timeout=120_000)
    row = page.locator(f"tr[data-job='{job.id}']").inner_text()
    assert "8/8 (100%)" in row and re.search(r"\d+\.\d%", row)  # progress, best held-out accuracy
    assert page.console.errors == []
