// The artifacts list: uploads (default) or job results of this tenant, newest first,
// filtered by kind, name and producing job, with storage used against the quota,
// downloads by link, a curl line, and delete.
import { getJson, query, request } from "./api.js";
import { curlLine, downloadButton } from "./downloads.js";
import { el, formatBytes, formatTime, table } from "./dom.js";

const PAGE = 50;
const KINDS = ["checkpoint", "data", "program", "result", "other"];
const SOURCES = { uploads: "false", results: "true", all: "" }; // the `produced` filter
const FILTERS = ["source", "kind", "name", "job"];

function usageLine(usage) {
  const used = formatBytes(usage.stored_bytes);
  if (usage.max_stored_bytes === null) return el("p", { class: "muted", id: "usage" }, `${used} stored (no quota).`);
  const share = usage.stored_bytes / usage.max_stored_bytes;
  return el("p", { id: "usage", class: share > 0.9 ? "error" : "muted" },
    `${used} of ${formatBytes(usage.max_stored_bytes)} stored (${Math.round(100 * share)}% of the quota).`,
    el("progress", { max: usage.max_stored_bytes, value: usage.stored_bytes }));
}

function filterBar(values, apply) {
  const form = el("form", { class: "filters", id: "artifact-filters", role: "search" },
    el("label", {}, "Show", el("select", { name: "source", id: "source-filter" },
      Object.keys(SOURCES).map((s) => el("option", { value: s, selected: s === values.source }, s)))),
    el("label", {}, "Kind", el("select", { name: "kind", id: "kind-filter" }, el("option", { value: "" }, "all"),
      KINDS.map((k) => el("option", { value: k, selected: k === values.kind }, k)))),
    el("label", {}, "Name", el("input", { name: "name", id: "name-filter", type: "search", value: values.name })),
    el("label", {}, "Job", el("input", { name: "job", id: "job-filter", value: values.job, placeholder: "job_…" })),
    el("button", { type: "submit" }, "Apply"));
  const read = () => Object.fromEntries(FILTERS.map((name) => [name, form.elements[name].value.trim()]));
  form.addEventListener("change", (event) => { if (event.target.tagName === "SELECT") apply(read()); });
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(read()); });
  return form;
}

function deleteButton(artifact, row, signal) {
  const button = el("button", { type: "button", class: "danger delete" }, "Delete");
  button.addEventListener("click", async () => {
    if (!window.confirm(`Delete ${artifact.name} (${artifact.id})?`)) return;
    try {
      await request(`/v1/artifacts/${artifact.id}`, { method: "DELETE", signal });
      row.remove();
    } catch (error) {
      row.after(el("tr", { class: "error" }, el("td", { colspan: 8 }, error.message)));
    }
  });
  return button;
}

export async function renderArtifacts(view, params, signal) {
  // A job's results are what one looks for with `job=`: show them unless told otherwise.
  const values = { source: params.get("source") || (params.get("job") ? "all" : "uploads"), kind: params.get("kind") || "",
    name: params.get("name") || "", job: params.get("job") || "" };
  const cursors = (params.get("cursors") || "").split(",").filter(Boolean);
  const filters = { produced: SOURCES[values.source] ?? "", kind: values.kind, name: values.name, job: values.job };
  const [page, usage] = await Promise.all([
    getJson(`/v1/artifacts${query({ ...filters, cursor: cursors.at(-1), limit: PAGE })}`, { signal }),
    getJson("/v1/usage", { signal })]);
  const go = (list) => { location.hash = `#/artifacts${query({ ...values, cursors: list.join(",") })}`; };
  const rows = page.data.map((a) => {
    const row = el("tr", { dataset: { artifact: a.id } },
      el("td", { class: "name" }, el("div", {}, a.name), el("div", { class: "mono muted small" }, a.id)),
      el("td", {}, a.kind), el("td", { class: "num" }, formatBytes(a.size)),
      el("td", { class: "mono hash", title: a.sha256 }, `${a.sha256.slice(0, 12)}…`),
      el("td", {}, a.producer_job_id ? el("a", { href: `#/jobs/${a.producer_job_id}`, class: "mono" }, a.producer_job_id) : "upload"),
      el("td", {}, formatTime(a.created_at)));
    row.append(el("td", { class: "actions" }, downloadButton(a.id, a.name, signal), curlLine(a.id, a.name),
      deleteButton(a, row, signal)));
    return row;
  });
  view.replaceChildren(
    el("h1", {}, "Artifacts"),
    usageLine(usage),
    filterBar(values, (next) => { location.hash = `#/artifacts${query(next)}`; }),
    rows.length ? table(["name / id", "kind", "size", "sha256", "produced by", "created", ""], rows, { id: "artifacts" })
      : el("p", { class: "muted", id: "no-artifacts" }, "No artifacts match."),
    el("div", { class: "pager" },
      el("button", { id: "prev-page", disabled: !cursors.length, onclick: () => go(cursors.slice(0, -1)) }, "← Newer"),
      el("button", { id: "next-page", disabled: !page.next_cursor, onclick: () => go([...cursors, page.next_cursor]) },
        "Older →")));
}
