// One job: facts, cancel, error, live per-target charts, result files, event timeline, spec.
// Events arrive over the live stream (from the first one), so the page is the same for a
// running job and a finished one; a succeeded job's charts are then redrawn from its
// report, which holds every step (progress events are throttled by the worker).
import { download, followEvents, getJson, isTerminal, request } from "./api.js";
import { JobCharts } from "./charts.js";
import { el, formatBytes, formatDuration, formatPercent, formatTime, jobFacts, progressText, statusBadge, table }
  from "./dom.js";

// Event types after which the job resource itself has changed (status, result, error).
const STATE_EVENTS = new Set(["claimed", "started", "released", "redispatched", "cancel_requested", "cancelled",
  "succeeded", "failed"]);

function facts(job) {
  const { method, arch, bestAccuracy } = jobFacts(job);
  const rows = [["status", statusBadge(job.status)], ["kind", job.kind], ["method", method],
    ["architecture", arch], ["progress", progressText(job) || "—"],
    ["best held-out accuracy", formatPercent(bestAccuracy)], ["attempts", `${job.attempts} of ${job.max_attempts}`],
    ["created", formatTime(job.created_at)], ["started", formatTime(job.started_at) || "—"],
    ["finished", formatTime(job.finished_at) || "—"], ["duration", formatDuration(job.started_at, job.finished_at) || "—"]];
  return el("dl", { class: "facts card", id: "job-facts" },
    rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", { dataset: { fact: name } }, value)]));
}

function errorBox(job) {
  if (!job.error) return null;
  return el("div", { class: "card error", id: "job-error" },
    el("strong", {}, "Error "), el("code", { dataset: { code: job.error.code } }, job.error.code), ": ",
    job.error.message);
}

// Result artifact ids with the path the CLI saves each under (as `trajx download` does):
// from the executor's manifest (`files`) where the job has one, else from the grouped ids.
function resultFiles(result) {
  if (!result) return [];
  if (Array.isArray(result.files)) {
    return result.files.map((f) => ({ path: f.path, id: f.artifact, size: f.size, sha256: f.sha256 }));
  }
  const files = [];
  (result.targets || []).forEach((target, index) => {
    for (const [role, id] of Object.entries(target || {})) {
      if (typeof id === "string") files.push({ path: `target-${index}/${role}.safetensors`, id });
    }
  });
  if (typeof result.report === "string") files.push({ path: "report.json", id: result.report });
  return files;
}

async function resultsTable(job, signal) {
  const files = resultFiles(job.result);
  if (!files.length) return el("p", { class: "muted", id: "no-results" },
    job.status === "succeeded" ? "No result files." : "Results appear when the job succeeds.");
  const artifacts = await Promise.all(files.map((f) => (f.sha256 ? f : getJson(`/v1/artifacts/${f.id}`, { signal }))));
  return table(["file", "size", "sha256", ""], files.map((file, i) => el("tr", { dataset: { artifact: file.id } },
    el("td", { class: "mono" }, file.path),
    el("td", { class: "num" }, formatBytes(artifacts[i].size)),
    el("td", { class: "mono", title: artifacts[i].sha256 }, artifacts[i].sha256),
    el("td", {}, el("button", { class: "download", onclick: () => download(file.id, file.path.replace("/", "-")) },
      "Download")))));
}

function describe(event) {
  const d = event.data || {};
  if (event.type === "progress") {
    const metrics = d.metrics || {};
    const accuracy = typeof metrics.accuracy === "number" ? `, accuracy ${formatPercent(metrics.accuracy)}` : "";
    return `target ${d.target} step ${d.target_step} (${d.step}/${d.total})${accuracy}`;
  }
  if (event.type === "failed") return `${d.code}: ${d.message}`;
  return Object.entries(d).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
}

async function loadReport(job, charts, signal) {
  if (!job.result || typeof job.result.report !== "string") return;
  const report = await (await request(`/v1/artifacts/${job.result.report}/content`, { signal })).json();
  charts.setReport(report.targets || []);
}

export async function renderJob(view, jobId, signal) {
  let job = await getJson(`/v1/jobs/${jobId}`, { signal });
  const header = el("div", { id: "job-header" });
  const results = el("div", { id: "results" });
  const chartBox = el("div", { class: "charts", id: "charts" });
  const timeline = el("tbody", {});
  const charts = new JobCharts(chartBox);
  const cancel = el("button", { class: "danger", id: "cancel" }, "Cancel job");

  const show = async (fresh) => {
    job = fresh;
    cancel.hidden = isTerminal(job.status) || job.status === "cancelling";
    header.replaceChildren(facts(job), errorBox(job) || "");
    results.replaceChildren(await resultsTable(job, signal));
  };
  cancel.addEventListener("click", async () => {
    if (!window.confirm(`Cancel job ${job.id}?`)) return;
    cancel.disabled = true;
    try {
      await show(await getJson(`/v1/jobs/${job.id}/cancel`, { signal, method: "POST" }));
    } finally {
      cancel.disabled = false;
    }
  });

  view.replaceChildren(
    el("p", {}, el("a", { href: "#/jobs" }, "← Jobs")),
    el("div", { class: "toolbar" }, el("h1", { class: "mono" }, job.id), cancel),
    header,
    el("h2", {}, "Per-step metrics"),
    job.spec && job.spec.eval_data === null
      ? el("p", { class: "muted", id: "no-eval-data" }, "No held-out data (eval_data) in the spec: accuracy and loss are not measured.")
      : "",
    chartBox,
    el("h2", {}, "Result files"), results,
    el("h2", {}, "Events"), el("div", { class: "timeline" }, el("table", { id: "timeline" }, timeline)),
    el("h2", {}, "Spec"), el("pre", { id: "spec" }, JSON.stringify(job.spec, null, 2)));
  await show(job);

  await followEvents(job.id, (event) => {
    timeline.append(el("tr", { dataset: { event: event.type } },
      el("td", { class: "mono" }, formatTime(event.created_at)), el("td", {}, event.type),
      el("td", {}, describe(event))));
    if (event.type === "progress") {
      charts.addProgress(event.data);
      job = { ...job, progress: { step: event.data.step, total: event.data.total } };
      header.replaceChildren(facts(job), errorBox(job) || "");
    }
    if (STATE_EVENTS.has(event.type)) {
      getJson(`/v1/jobs/${job.id}`, { signal }).then(show).catch(() => {});
    }
  }, signal);
  if (signal.aborted) return;
  const final = await getJson(`/v1/jobs/${job.id}`, { signal });
  await show(final);
  await loadReport(final, charts, signal);
}
