"""The dashboard in a real browser: sign in, jobs list, a job's live charts, cancel, tenancy."""

import hashlib
import json
import re
import time

import pytest
import torch
from safetensors.torch import save_file

from tests.dashboard.conftest import sign_in, snap_both_widths, upload_inputs
from trajx.client import ApiError, Client
from trajx.demo.server import EmbeddedServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def points(page, metric: str = "accuracy") -> int:
    """Points with a value on the job page's `metric` chart, all lines together (0 before it exists)."""
    chart = page.locator(f"#charts .chart[data-metric='{metric}']").first
    return int(chart.get_attribute("data-points")) if chart.count() else 0


def points_at_one_step(page) -> int:
    """The accuracy chart's points, checked to equal the step its summary row shows; read
    between two reads of that step that agree (the live chart can grow between reads)."""
    for _ in range(50):
        before = page.get_attribute("#target-summary tr[data-line='0']", "data-last-step")
        count = points(page)
        if page.get_attribute("#target-summary tr[data-line='0']", "data-last-step") == before:
            assert count == int(before)
            return count
    raise AssertionError("the chart never held still between two reads")


def wait_until(page, condition, timeout: float = 60.0) -> None:
    """Poll `condition()` from Python: the page's CSP forbids the eval `wait_for_function` needs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(100)


def test_finished_job_overlays_its_targets_with_a_summary_table(page, client, inputs, server, tmp_path, screenshots):
    job = client.wait(client.create_job(inputs.spec(steps=6, targets=2), name="two seeds", labels=["demo"]).id,
                      timeout=180)
    assert job.status == "succeeded", job.error

    sign_in(page, server.api_key)
    row = page.locator(f"tr[data-job='{job.id}']")
    assert row.locator("[data-status]").inner_text() == "succeeded"
    assert "fgmt" in row.inner_text() and "mlp" in row.inner_text() and "two seeds" in row.inner_text()
    assert row.locator("[data-fact='targets']").inner_text() == "2" and "demo" in row.inner_text()
    row.locator("a").first.click()
    page.wait_for_selector("#results tr[data-artifact]")
    # Both targets on one chart per metric: 2 lines x 6 steps, from the report.
    wait_until(page, lambda: page.locator("#charts .chart[data-metric='accuracy'][data-points='12']").count() == 1)
    for metric in ("accuracy", "loss", "objective", "seconds"):
        chart = page.locator(f"#charts .chart[data-metric='{metric}']")
        assert chart.get_attribute("data-series") == "2" and points(page, metric) == 12, metric
    assert page.locator("#charts canvas").count() == 4  # one uPlot canvas per chart, not per target
    report = json.loads(client.download(job.result["report"], tmp_path / "from-api.json").read_text())
    summary = page.locator("#target-summary tr[data-line]")
    assert summary.count() == 2
    for target in (0, 1):
        steps = report["targets"][target]["steps"]
        best = max(steps, key=lambda s: s["accuracy"])  # the first of equal bests, as the page marks
        assert summary.nth(target).get_attribute("data-best-step") == str(best["step"])
    # Artifact ids are on the page (chaining jobs needs them), with a curl line to copy.
    assert job.result["report"] in page.inner_text("#results")
    assert "Authorization: Bearer $TRAJX_API_KEY" in page.get_attribute("#results .copy", "data-command")
    assert page.locator("#timeline tr[data-event='succeeded']").count() == 1
    assert "target 1 step" in page.inner_text("#timeline") or "target 0 step" in page.inner_text("#timeline")
    snap_both_widths(page, screenshots, "job-transfer")

    with page.expect_download() as download:  # a signed link the browser streams to disk
        page.locator("#results tr", has_text="report.json").locator("button.download").click()
    assert "/downloads/" in download.value.url and "?token=" in download.value.url
    saved = tmp_path / "report.json"
    download.value.save_as(saved)
    assert '"targets"' in saved.read_text()
    assert page.console.errors == []


def test_average_and_align_jobs_get_pages_of_their_own(page, client, inputs, server, screenshots):
    average = client.create_job(inputs.average_spec(), name="ema sweep")
    align = client.create_job(inputs.align_spec())
    average, align = client.wait(average.id, timeout=180), client.wait(align.id, timeout=180)
    assert average.status == align.status == "succeeded", (average.error, align.error)

    sign_in(page, server.api_key)
    row = page.locator(f"tr[data-job='{average.id}']")
    row.wait_for()
    assert "ema decay=0.5" in row.inner_text() and "[object Object]" not in page.inner_text("#jobs")
    assert f"{100 * average.summary['best_accuracy']:.1f}%" in row.inner_text()

    page.goto(f"/#/jobs/{average.id}")
    page.wait_for_selector("#candidates tr[data-candidate]")
    wait_until(page, lambda: page.locator("#candidates tr[data-candidate]").count() == 2)
    chosen = page.locator("#candidates tr[data-chosen='true']")
    assert chosen.count() == 1 and chosen.get_attribute("data-candidate") == average.summary["best"]["label"]
    assert page.inner_text("[data-fact='method']") == "ema decay=0.5 bias_correction"  # bias correction is on by default
    assert page.inner_text("[data-fact='best held-out accuracy']") != "—"
    page.wait_for_selector("#timeline tr[data-event='progress']")
    assert "undefined" not in page.inner_text("#timeline") and "candidate ema" in page.inner_text("#timeline")
    snap_both_widths(page, screenshots, "job-average")

    page.goto(f"/#/jobs/{align.id}")
    # The barrier curve: naive and aligned, 11 values of α each, on loss and accuracy.
    wait_until(page, lambda: page.locator("#barrier-curve .chart[data-metric='loss'][data-points='22']").count() == 1)
    assert page.get_attribute("#barrier-curve .chart[data-metric='accuracy']", "data-series") == "2"
    assert page.locator("#barriers tr[data-path]").count() == 2
    assert "undefined" not in page.inner_text("#timeline")
    snap_both_widths(page, screenshots, "job-align")
    assert page.console.errors == []


def test_running_job_chart_grows_queue_view_and_cancel(page, client, inputs, server, screenshots):
    job = client.create_job(inputs.spec(steps=1000))
    waiting = client.create_job(inputs.spec(steps=1000), name="waits its turn")  # the one worker is busy
    sign_in(page, server.api_key)
    page.goto(f"/#/jobs/{job.id}")
    page.wait_for_selector("[data-fact='status'] [data-status='running']")
    wait_until(page, lambda: points(page) >= 1)
    first = points(page)
    wait_until(page, lambda: points(page) > first)
    assert client.get_job(job.id).status == "running"  # it grew while running, not from a final report
    # Live, too, one point per step: the throttled progress events carry every step since the last.
    assert points_at_one_step(page) > first

    page.click("#nav a[data-page='/workers']")
    page.wait_for_selector("#workers tr[data-worker] [data-alive='true']")
    queued = page.locator(f"#queued tr[data-job='{waiting.id}']")
    assert "waits its turn" in queued.inner_text() and queued.locator("td").first.inner_text() == "1"
    assert "worker" in queued.locator(".reason").inner_text()
    snap_both_widths(page, screenshots, "workers")
    page.goto(f"/#/jobs/{waiting.id}")
    page.wait_for_selector("#queue-reason:has-text('Position 1 in the queue')")
    client.cancel(waiting.id)

    page.goto(f"/#/jobs/{job.id}")
    page.wait_for_selector("[data-fact='status'] [data-status='running']")
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
    jobs = [client.create_job(inputs.spec(steps=1000)) for _ in range(3)]
    for job in jobs:
        client.cancel(job.id)
    # A running job is cancelled between steps, later than a queued one: wait for all three.
    assert [client.wait(job.id, timeout=120).status for job in jobs] == ["cancelled"] * 3
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


def test_jobs_list_filters_compares_and_keeps_focus(page, client, inputs, server, screenshots):
    runs = [client.create_job(inputs.spec(steps=4), name=f"compare run {i}", labels=["cmp"]) for i in range(2)]
    failed = client.create_job({**inputs.spec(steps=2), "train_data": inputs.bad_train}, labels=["cmp"])
    runs = [client.wait(job.id, timeout=120) for job in runs]
    failed = client.wait(failed.id, timeout=120)
    assert [job.status for job in runs] == ["succeeded"] * 2 and failed.status == "failed"

    sign_in(page, server.api_key)
    page.goto("/#/jobs?label=cmp")
    ids = lambda: page.locator("tr[data-job]").evaluate_all("rows => rows.map(r => r.dataset.job)")
    wait_until(page, lambda: set(ids()) == {failed.id, *(job.id for job in runs)})
    # A failed row shows its error code.
    assert page.get_attribute(f"tr[data-job='{failed.id}'] .error-code", "data-code") == failed.error.code
    page.fill("#q-filter", "RUN 1")
    page.press("#q-filter", "Enter")
    wait_until(page, lambda: ids() == [runs[1].id])
    assert "q=RUN+1" in page.url or "q=RUN%201" in page.url
    page.goto("/#/jobs?label=cmp&kind=average")
    page.wait_for_selector("#no-jobs:has-text('match')")
    page.goto("/#/jobs?label=cmp")
    wait_until(page, lambda: len(ids()) == 3)
    snap_both_widths(page, screenshots, "jobs")

    for job in runs:
        page.check(f"tr[data-job='{job.id}'] input.pick")
    page.click("#compare")
    page.wait_for_selector("#charts .chart[data-metric='accuracy'][data-series='2']")
    wait_until(page, lambda: page.get_attribute("#charts .chart[data-metric='accuracy']", "data-points") == "8")
    assert page.locator("#target-summary tr[data-line]").count() == 2
    assert "compare run 0 · target 0" in page.inner_text("#target-summary")
    snap_both_widths(page, screenshots, "compare")

    # While a listed job runs the list refreshes every 2 s: what has focus keeps it.
    live = client.create_job(inputs.spec(steps=1000, targets=4), labels=["cmp"])
    page.goto("/#/jobs?label=cmp")
    page.wait_for_selector(f"tr[data-job='{live.id}'] [data-status='running']")
    page.focus("#q-filter")
    page.keyboard.type("half-typed")
    page.wait_for_timeout(4500)  # two refreshes
    assert page.evaluate("document.activeElement.id") == "q-filter"
    assert page.input_value("#q-filter") == "half-typed"
    assert client.cancel(live.id).status == "cancelling"  # it ran (and the list refreshed) all along
    assert page.console.errors == []


def test_sign_in_is_refused_for_a_wrong_key_and_the_key_never_reaches_a_url(page, server, screenshots):
    page.goto("/")
    page.wait_for_selector("#key-file")
    assert page.is_hidden("#nav")  # nothing to navigate to before signing in
    assert page.evaluate("document.activeElement.id") == "api-key"
    # The hint names this server's data dir, not ./var.
    assert page.inner_text("#key-file") == str(server.data_dir / "local-api-key")
    snap_both_widths(page, screenshots, "sign-in")
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


def test_a_revoked_key_returns_to_sign_in_saying_why(page, server, other_tenant):
    from app.core.persistence.db import make_engine, make_session_factory, session_scope
    from app.core.tenancy.admin import create_api_key, list_api_keys, revoke_api_key

    engine = make_engine(f"sqlite:///{server.data_dir / 'trajx.db'}")
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        key = create_api_key(session, other_tenant.name, "to revoke")
    sign_in(page, key)
    with session_scope(sessions) as session:
        revoke_api_key(session, next(k.id for k, _ in list_api_keys(session, other_tenant.name)
                                     if k.name == "to revoke"))
    engine.dispose()
    # The next request is refused: this navigation's, or a refresh's that came first (then
    # the nav is already gone, which is why the page is changed by its address, not a click).
    page.evaluate("location.hash = '#/artifacts'")
    page.wait_for_selector("#sign-in-error:has-text('refused this tab')")
    assert page.is_hidden("#nav") and page.evaluate("sessionStorage.length") == 0


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


def test_artifacts_page_filters_downloads_and_deletes(page, client, inputs, server, tmp_path, screenshots):
    spare = tmp_path / "spare-upload.safetensors"
    save_file({"inputs": torch.zeros(4, 64), "targets": torch.zeros(4, dtype=torch.int64)}, str(spare))
    spare_id = client.upload(spare).id

    sign_in(page, server.api_key)
    page.click("#nav a[data-page='/artifacts']")
    row = page.locator(f"tr[data-artifact='{inputs.train}']")
    row.wait_for()
    assert "train.safetensors" in row.inner_text() and "data" in row.inner_text()
    assert "stored" in page.inner_text("#usage")
    # Uploads by default: job results have a filter of their own.
    assert "result" not in page.locator("tr[data-artifact] td:nth-child(2)").all_inner_texts()
    page.fill("#name-filter", "SPARE-up")
    page.press("#name-filter", "Enter")
    wait_until(page, lambda: page.locator("tr[data-artifact]").count() == 1)
    assert page.locator(f"tr[data-artifact='{spare_id}']").count() == 1
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"tr[data-artifact='{spare_id}'] button.delete")
    wait_until(page, lambda: page.locator(f"tr[data-artifact='{spare_id}']").count() == 0)
    with pytest.raises(ApiError, match="no artifact"):
        client.get_artifact(spare_id)

    page.goto("/#/artifacts")
    row.wait_for()
    with page.expect_download() as download:
        row.locator("button.download").click()
    saved = tmp_path / "train.safetensors"
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == client.get_artifact(inputs.train).sha256
    page.select_option("#source-filter", "results")
    page.wait_for_url("**source=results**")
    wait_until(page, lambda: page.locator(f"tr[data-artifact='{inputs.train}']").count() == 0)
    assert set(page.locator("tr[data-artifact] td:nth-child(2)").all_inner_texts()) <= {"result"}
    snap_both_widths(page, screenshots, "artifacts")
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


def test_server_down_shows_a_notice_and_marks_the_status_stale(page, tmp_path, screenshots):
    data_dir = tmp_path / "server"
    server = EmbeddedServer(data_dir, env={"OMP_NUM_THREADS": "1"}).start()
    try:
        with Client(server.url, server.api_key) as own:
            (tmp_path / "inputs").mkdir()
            job = own.create_job(upload_inputs(own, tmp_path / "inputs").spec(steps=1000))
        sign_in(page, server.api_key, server.url)
        page.goto(f"{server.url}/#/jobs/{job.id}")
        page.wait_for_selector("[data-fact='status'] [data-status='running']")
        assert page.is_enabled("#cancel") and page.is_hidden("#connection")
    finally:
        server.stop()
    page.wait_for_selector("#connection:not([hidden])", timeout=30_000)
    assert "not answered" in page.inner_text("#connection")
    page.wait_for_selector("[data-fact='status'] [data-stale='true']")
    assert page.is_disabled("#cancel")
    snap_both_widths(page, screenshots, "server-down")

    # Back on the same address: the notice goes and Cancel works again.
    restarted = EmbeddedServer(data_dir, port=server.port, env={"OMP_NUM_THREADS": "1"}).start()
    try:
        page.wait_for_selector("#connection", state="hidden", timeout=60_000)
        page.wait_for_selector("#cancel:not([disabled])")
    finally:
        restarted.stop()

