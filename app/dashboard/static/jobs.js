// The jobs list: newest first, filter by status, pages by the API's cursors; refreshes
// itself while a listed job is still live.
import { getJson, isTerminal, query } from "./api.js";
import { el, formatDuration, formatPercent, formatTime, jobFacts, progressText, statusBadge, table } from "./dom.js";

const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
const PAGE = 20; // jobs per page unless the address says `limit=` (1 to 200, the API's bounds)
const REFRESH_MS = 2000;

function jobRow(job) {
  const facts = jobFacts(job);
  return el("tr", { dataset: { job: job.id } },
    el("td", {}, el("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id)),
    el("td", {}, job.kind), el("td", {}, facts.method), el("td", {}, facts.arch),
    el("td", {}, statusBadge(job.status)),
    el("td", {}, progressText(job)),
    el("td", { class: "num" }, formatPercent(facts.bestAccuracy)),
    el("td", {}, formatTime(job.created_at)),
    el("td", {}, formatDuration(job.started_at, job.finished_at)));
}

export async function renderJobs(view, params, signal) {
  const status = params.get("status") || "";
  const cursors = (params.get("cursors") || "").split(",").filter(Boolean); // pages before this one
  const cursor = cursors.at(-1) || null;
  const limit = Math.min(200, Math.max(1, Number(params.get("limit")) || PAGE));
  const page = await getJson(`/v1/jobs${query({ status, cursor, limit })}`, { signal });

  const filter = el("select", { id: "status-filter", "aria-label": "status" },
    el("option", { value: "" }, "all statuses"),
    STATUSES.map((s) => el("option", { value: s, selected: s === status }, s)));
  const size = limit === PAGE ? null : limit;
  filter.addEventListener("change", () => { location.hash = `#/jobs${query({ status: filter.value, limit: size })}`; });
  const go = (list) => { location.hash = `#/jobs${query({ status, limit: size, cursors: list.join(",") })}`; };
  const rows = page.data.map(jobRow);
  view.replaceChildren(
    el("h1", {}, "Jobs"),
    el("div", { class: "toolbar" }, el("label", { for: "status-filter" }, "Status"), filter),
    rows.length ? table(["id", "kind", "method", "architecture", "status", "progress", "best held-out acc.",
      "created", "duration"], rows) : el("p", { class: "muted", id: "no-jobs" }, "No jobs yet."),
    el("div", { class: "pager" },
      el("button", { id: "prev-page", disabled: !cursors.length, onclick: () => go(cursors.slice(0, -1)) }, "← Newer"),
      el("button", { id: "next-page", disabled: !page.next_cursor, onclick: () => go([...cursors, page.next_cursor]) },
        "Older →")));
  if (page.data.some((job) => !isTerminal(job.status))) {
    setTimeout(() => { if (!signal.aborted) renderJobs(view, params, signal).catch(() => {}); }, REFRESH_MS);
  }
}
