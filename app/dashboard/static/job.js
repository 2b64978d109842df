// One job: facts, name and labels, cancel, error, what its kind produced (live), result
// files with their artifact ids and a curl line, event timeline, spec. Events arrive over
// the live stream (from the first one), so the page is the same for a running job and a
// finished one; a succeeded job's view is then redrawn from its report, which holds every
// step (progress events are throttled by the worker).
import { connection, followEvents, getJson, isTerminal, request, sendJson } from "./api.js";
import { downloadButton, curlLine } from "./downloads.js";
import { el, formatBytes, formatDuration, formatPercent, formatTime, jobFacts, jobTitle, progressText, statusBadge, table }
  from "./dom.js";
import { describeProgress, kindFacts, kindView } from "./kinds.js";
import { labelsEditor } from "./labels.js";

// Event types after which the job resource itself has changed (status, result, error).
const STATE_EVENTS = new Set(["claimed", "started", "released", "redispatched", "cancel_requested", "cancelled",
  "succeeded", "failed"]);

function facts(job) {
  const { method, arch, bestAccuracy } = jobFacts(job);
  const stale = !connection.online && !isTerminal(job.status);
  const rows = [["status", statusBadge(job.status, stale)], ["kind", job.kind], ["method", method],
    ["architecture", arch], ...kindFacts(job), ["progress", progressText(job) || "—"],
    ...(job.kind === "align" ? [] : [["best held-out accuracy", formatPercent(bestAccuracy)]]),
    ["attempts", `${job.attempts} of ${job.max_attempts}`],
    ["queue", job.queue], ["created", formatTime(job.created_at)], ["started", formatTime(job.started_at) || "—"],
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
  return table(["file", "artifact id", "size", "sha256", ""],
    files.map((file, i) => el("tr", { dataset: { artifact: file.id } },
      el("td", { class: "mono" }, file.path),
      el("td", { class: "mono copyable", title: "an input of another job: use this id in its spec" }, file.id),
      el("td", { class: "num" }, formatBytes(artifacts[i].size)),
      el("td", { class: "mono hash", title: artifacts[i].sha256 }, `${artifacts[i].sha256.slice(0, 12)}…`),
      el("td", { class: "actions" }, downloadButton(file.id, file.path.replaceAll("/", "-"), signal),
        curlLine(file.id, file.path.replaceAll("/", "-"))))));
}

function describe(event) {
  const d = event.data || {};
  if (event.type === "progress") return describeProgress(d);
  if (event.type === "failed") return `${d.code}: ${d.message}`;
  return Object.entries(d).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
}

async function loadReport(job, view, signal) {
  if (!job.result || typeof job.result.report !== "string") return;
  const report = await (await request(`/v1/artifacts/${job.result.report}/content`, { signal })).json();
  view.setReport(report);
}

export async function renderJob(view, jobId, signal) {
  let job = await getJson(`/v1/jobs/${jobId}`, { signal });
  const header = el("div", { id: "job-header" });
  const title = el("h1", { id: "job-title" });
  const results = el("div", { id: "results" });
  const kindBox = el("section", { id: "kind-view", dataset: { kind: job.kind } });
  const timeline = el("tbody", {});
  const cancel = el("button", { class: "danger", id: "cancel" }, "Cancel job");

  const drawHeader = () => {
    title.replaceChildren(jobTitle(job), job.name ? el("span", { class: "mono muted id" }, job.id) : "");
    cancel.hidden = isTerminal(job.status) || job.status === "cancelling";
    // With the server not answering a cancel could not be sent, and the status may be old.
    cancel.disabled = !connection.online;
    header.replaceChildren(facts(job), errorBox(job) || "");
  };
  // A queued job says where it stands and why it waits (what the database can tell).
  const waiting = el("p", { class: "muted", id: "queue-reason", role: "status" });
  const showQueue = async () => {
    const mine = job.status === "queued"
      ? (await getJson("/v1/queue", { signal })).queued.find((q) => q.id === job.id) : null;
    waiting.textContent = mine ? `Position ${mine.position} in the queue: ${mine.reason}.` : "";
  };
  const show = async (fresh) => {
    job = fresh;
    drawHeader();
    await showQueue();
    results.replaceChildren(await resultsTable(job, signal));
  };
  cancel.addEventListener("click", async () => {
    if (!window.confirm(`Cancel job ${job.id}?`)) return;
    cancel.disabled = true;
    try {
      await show(await getJson(`/v1/jobs/${job.id}/cancel`, { signal, method: "POST" }));
    } finally {
      cancel.disabled = !connection.online;
    }
  });
  window.addEventListener("trajx:connection", drawHeader, { signal });

  const editor = labelsEditor(job, async (changes) => {
    job = { ...job, ...(await sendJson(`/v1/jobs/${job.id}`, "PATCH", changes, { signal })) };
    drawHeader();
    return job;
  });
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/jobs" }, "← Jobs")),
    el("div", { class: "toolbar" }, title, cancel),
    header, waiting, editor,
    job.spec && job.spec.eval_data === null
      ? el("p", { class: "muted", id: "no-eval-data" }, "No held-out data (eval_data) in the spec: accuracy and loss are not measured.")
      : "",
    kindBox,
    el("h2", {}, "Result files"), results,
    el("h2", {}, "Events"), el("div", { class: "timeline" }, el("table", { id: "timeline" }, timeline)),
    el("h2", {}, "Spec"), el("pre", { id: "spec" }, JSON.stringify(job.spec, null, 2)));
  const kind = kindView(job, kindBox);
  await show(job);

  await followEvents(job.id, (event) => {
    timeline.append(el("tr", { dataset: { event: event.type } },
      el("td", { class: "mono" }, formatTime(event.created_at)), el("td", {}, event.type),
      el("td", {}, describe(event))));
    if (event.type === "progress") {
      kind.addProgress(event.data);
      job = { ...job, progress: { step: event.data.step, total: event.data.total } };
      drawHeader();
    }
    if (STATE_EVENTS.has(event.type)) {
      getJson(`/v1/jobs/${job.id}`, { signal }).then(show).catch(() => {});
    }
  }, signal);
  if (signal.aborted) return;
  const final = await getJson(`/v1/jobs/${job.id}`, { signal });
  await show(final);
  await loadReport(final, kind, signal);
}
