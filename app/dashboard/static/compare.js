// Several jobs on one set of charts: every target of every picked transfer job is a line
// (from its report once it succeeded, else from its progress events so far), with the
// summary table (last, best, best step) for all of them.
import { getJson, request } from "./api.js";
import { TargetCharts } from "./charts.js";
import { el, jobTitle } from "./dom.js";

const MAX_JOBS = 10;

// Every step a job's progress events carried, per target: Map(target -> [metrics rows]).
async function stepsFromEvents(jobId, signal) {
  const targets = new Map();
  let cursor = null;
  for (;;) {
    const page = await getJson(`/v1/jobs/${jobId}/events?limit=1000${cursor === null ? "" : `&cursor=${cursor}`}`, { signal });
    for (const event of page.data) {
      if (event.type !== "progress") continue;
      for (const { target, target_step: step, metrics } of event.data.steps || [event.data]) {
        if (typeof target !== "number" || typeof step !== "number") continue;
        if (!targets.has(target)) targets.set(target, new Map());
        targets.get(target).set(step, { ...(metrics || {}), step });
      }
    }
    if (!page.next_cursor || !page.data.length) break;
    cursor = page.data[page.data.length - 1].id;
  }
  return new Map([...targets].map(([target, rows]) => [target, [...rows.values()]]));
}

async function stepsOf(job, signal) {
  if (job.status === "succeeded" && job.result && typeof job.result.report === "string") {
    const report = await (await request(`/v1/artifacts/${job.result.report}/content`, { signal })).json();
    return new Map((report.targets || []).map((target, index) => [index, target.steps || []]));
  }
  return stepsFromEvents(job.id, signal);
}

export async function renderCompare(view, params, signal) {
  const ids = (params.get("jobs") || "").split(",").filter(Boolean).slice(0, MAX_JOBS);
  const jobs = await Promise.all(ids.map((id) => getJson(`/v1/jobs/${id}`, { signal })));
  const transfers = jobs.filter((job) => job.kind === "transfer");
  const box = el("div", { class: "charts", id: "charts" });
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/jobs" }, "← Jobs")),
    el("h1", {}, `Compare ${jobs.length} job${jobs.length === 1 ? "" : "s"}`),
    el("ul", { class: "compared" }, jobs.map((job) => el("li", { dataset: { job: job.id } },
      el("a", { href: `#/jobs/${job.id}` }, jobTitle(job)), ` · ${job.kind} · ${job.status}`,
      job.kind === "transfer" ? "" : el("span", { class: "muted" }, " (no per-step metrics: see its page)")))),
    jobs.length ? box : el("p", { class: "muted", id: "nothing-to-compare" }, "Pick jobs in the list to compare them."));
  const charts = new TargetCharts(box, { label: (key) => key });
  const steps = await Promise.all(transfers.map((job) => stepsOf(job, signal)));
  transfers.forEach((job, j) => {
    for (const [target, rows] of steps[j]) charts.setRows(`${jobTitle(job)} · target ${target}`, rows, false);
  });
  charts.redraw();
}
