// The jobs list: newest first, filters (status, kind, method, architecture, label, name
// search) that the API applies, pages by the API's cursors, jobs picked for comparison.
// While a listed job is live it refreshes its rows in place, so focus and selection stay.
import { connection, getJson, isTerminal, query } from "./api.js";
import { el, formatDuration, formatPercent, formatTime, jobFacts, progressText, statusBadge, table } from "./dom.js";

const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
const KINDS = ["transfer", "average", "align"];
const METHODS = ["fgmt", "gmt", "naive", "oracle", "uniform", "lawa", "ema", "weights", "activations"];
const FILTERS = ["status", "kind", "method", "arch", "label", "q"];
const PAGE = 20; // jobs per page unless the address says `limit=` (1 to 200, the API's bounds)
const REFRESH_MS = 2000;
const picked = new Set(); // job ids chosen for the compare page, kept across pages and filters

function nameCell(job) {
  return el("td", { class: "name" },
    el("a", { href: `#/jobs/${job.id}`, class: job.name ? null : "mono" }, job.name || job.id),
    job.name ? el("div", { class: "mono muted small" }, job.id) : "",
    (job.labels || []).length ? el("div", { class: "labels" }, job.labels.map((l) => el("span", { class: "label" }, l))) : "");
}

function statusCell(job) {
  const stale = !connection.online && !isTerminal(job.status);
  return el("td", {}, statusBadge(job.status, stale),
    job.error ? el("code", { class: "error-code", dataset: { code: job.error.code }, title: job.error.message }, job.error.code) : "");
}

function jobCells(job) {
  const facts = jobFacts(job);
  // What one looks for first comes first: on a phone the rest is a sideways scroll away.
  return [nameCell(job), statusCell(job), el("td", {}, progressText(job)),
    el("td", { class: "num" }, formatPercent(facts.bestAccuracy)),
    el("td", {}, job.kind), el("td", {}, facts.method), el("td", {}, facts.arch),
    el("td", { class: "num", dataset: { fact: "targets" } }, facts.targets ?? "—"),
    el("td", {}, formatTime(job.created_at)),
    el("td", {}, formatDuration(job.started_at, job.finished_at))];
}

function pickBox(job, onChange) {
  const box = el("input", { type: "checkbox", class: "pick", "aria-label": `compare ${job.name || job.id}`,
    checked: picked.has(job.id) });
  box.addEventListener("change", () => { if (box.checked) picked.add(job.id); else picked.delete(job.id); onChange(); });
  return el("td", {}, box);
}

// Replace only the cells whose content changed: the focused one (a link, a checkbox) stays.
function updateRow(row, cells) {
  cells.forEach((cell, i) => {
    const old = row.cells[i + 1];
    if (old.textContent !== cell.textContent) old.replaceWith(cell);
  });
}

function filterBar(values, apply) {
  const select = (name, label, options) => el("label", {}, label, el("select", { id: `${name}-filter`, name },
    el("option", { value: "" }, "all"), options.map((o) => el("option", { value: o, selected: o === values[name] }, o))));
  const text = (name, label, placeholder) => el("label", {}, label, el("input", { id: `${name}-filter`, name,
    value: values[name] || "", placeholder, type: name === "q" ? "search" : "text" }));
  const form = el("form", { class: "filters", id: "filters", role: "search" },
    select("status", "Status", STATUSES), select("kind", "Kind", KINDS), select("method", "Method", METHODS),
    text("arch", "Architecture", "mlp, resnet…"), text("label", "Label", "a label"),
    text("q", "Name", "search names"), el("button", { type: "submit" }, "Apply"));
  const read = () => Object.fromEntries(FILTERS.map((name) => [name, form.elements[name].value.trim()]));
  form.addEventListener("change", (event) => { if (event.target.tagName === "SELECT") apply(read()); });
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(read()); });
  return form;
}

export async function renderJobs(view, params, signal) {
  const values = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || ""]));
  const cursors = (params.get("cursors") || "").split(",").filter(Boolean); // pages before this one
  const limit = Math.min(200, Math.max(1, Number(params.get("limit")) || PAGE));
  const size = limit === PAGE ? null : limit;
  const address = (extra) => `#/jobs${query({ ...values, limit: size, ...extra })}`;
  const load = () => getJson(`/v1/jobs${query({ ...values, cursor: cursors.at(-1) || null, limit })}`, { signal });
  const page = await load();

  const compare = el("a", { id: "compare", class: "button" });
  const drawCompare = () => {
    compare.textContent = `Compare ${picked.size} selected`;
    compare.href = `#/compare${query({ jobs: [...picked].join(",") })}`;
    compare.classList.toggle("disabled", picked.size < 1);
    compare.setAttribute("aria-disabled", String(picked.size < 1));
  };
  const body = el("tbody", {});
  const draw = (jobs) => {
    const rows = new Map([...body.rows].map((row) => [row.dataset.job, row]));
    const ordered = jobs.map((job) => {
      const row = rows.get(job.id);
      if (!row) return el("tr", { dataset: { job: job.id } }, pickBox(job, drawCompare), jobCells(job));
      updateRow(row, jobCells(job));
      return row;
    });
    ordered.forEach((row, i) => { if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] || null); });
    while (body.rows.length > ordered.length) body.rows[ordered.length].remove();
  };
  draw(page.data);
  drawCompare();
  const filtered = FILTERS.some((name) => values[name]);
  view.replaceChildren(
    el("div", { class: "toolbar" }, el("h1", {}, "Jobs"), compare),
    filterBar(values, (next) => { location.hash = `#/jobs${query({ ...next, limit: size })}`; }),
    page.data.length ? table(["", "name", "status", "progress", "best held-out acc.", "kind", "method",
      "architecture", "targets", "created", "duration"], body, { id: "jobs" })
      : el("p", { class: "muted", id: "no-jobs" }, filtered ? "No jobs match these filters." : "No jobs yet."),
    el("div", { class: "pager" },
      el("button", { id: "prev-page", disabled: !cursors.length,
        onclick: () => { location.hash = address({ cursors: cursors.slice(0, -1).join(",") }); } }, "← Newer"),
      el("button", { id: "next-page", disabled: !page.next_cursor,
        onclick: () => { location.hash = address({ cursors: [...cursors, page.next_cursor].join(",") }); } },
      "Older →")));

  // Live rows refresh in place; while the server does not answer they show as stale and
  // the refresh keeps trying.
  let live = page.data.some((job) => !isTerminal(job.status));
  window.addEventListener("trajx:connection", () => draw(page.data), { signal });
  while (live && !signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
    if (signal.aborted) return;
    try {
      const fresh = await load();
      page.data = fresh.data;
      draw(fresh.data);
      live = fresh.data.some((job) => !isTerminal(job.status));
    } catch (error) {
      if (signal.aborted) return;
      draw(page.data);
    }
  }
}
