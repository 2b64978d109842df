// Workers and queue, as the database knows them: workers holding a job (alive or not by
// their heartbeat) and each of this tenant's queued jobs with its position and why it waits.
import { getJson } from "./api.js";
import { el, formatTime, table } from "./dom.js";

const REFRESH_MS = 5000;

function draw(view, queue) {
  const workers = queue.workers.length
    ? table(["worker", "state", "last heartbeat", "jobs held"], queue.workers.map((w) => el("tr", { dataset: { worker: w.id } },
      el("td", { class: "mono" }, w.id),
      el("td", {}, el("span", { class: `status ${w.alive ? "running" : "failed"}`, dataset: { alive: String(w.alive) } },
        w.alive ? "alive" : "no heartbeat")),
      el("td", {}, formatTime(w.last_heartbeat)), el("td", { class: "num" }, String(w.running_jobs)))))
    : el("p", { class: "muted", id: "no-workers" }, "No worker holds a job now. (An idle worker leaves no record, "
      + "so the database cannot tell idle workers from none.)");
  const queued = queue.queued.length
    ? table(["position", "job", "kind", "queued since", "why it waits"], queue.queued.map((q) => el("tr", { dataset: { job: q.id } },
      el("td", { class: "num" }, String(q.position)),
      el("td", {}, el("a", { href: `#/jobs/${q.id}`, class: q.name ? null : "mono" }, q.name || q.id)),
      el("td", {}, q.kind), el("td", {}, formatTime(q.created_at)), el("td", { class: "wrap reason" }, q.reason))))
    : el("p", { class: "muted", id: "no-queued" }, "None of your jobs is waiting.");
  view.replaceChildren(
    el("h1", {}, "Workers and queue"),
    el("p", { class: "muted", id: "running-share" },
      `Your jobs running: ${queue.running_jobs} of at most ${queue.max_running_jobs} at once.`),
    el("h2", {}, "Workers"), el("div", { id: "workers" }, workers),
    el("h2", {}, "Your queued jobs"), el("div", { id: "queued" }, queued));
}

export async function renderWorkers(view, params, signal) {
  draw(view, await getJson("/v1/queue", { signal }));
  while (!signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
    if (signal.aborted) return;
    try {
      draw(view, await getJson("/v1/queue", { signal }));
    } catch {
      // The connection notice says the server is not answering; the next round retries.
    }
  }
}
