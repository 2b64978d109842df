// The artifacts list: uploads and job results of this tenant, newest first, with downloads.
import { download, getJson, query } from "./api.js";
import { el, formatBytes, formatTime, table } from "./dom.js";

const PAGE = 50;

export async function renderArtifacts(view, params, signal) {
  const cursors = (params.get("cursors") || "").split(",").filter(Boolean);
  const page = await getJson(`/v1/artifacts${query({ cursor: cursors.at(-1), limit: PAGE })}`, { signal });
  const go = (list) => { location.hash = `#/artifacts${query({ cursors: list.join(",") })}`; };
  const rows = page.data.map((a) => el("tr", { dataset: { artifact: a.id } },
    el("td", { class: "mono" }, a.id), el("td", {}, a.name), el("td", {}, a.kind), el("td", {}, a.format),
    el("td", { class: "num" }, formatBytes(a.size)),
    el("td", { class: "mono", title: a.sha256 }, `${a.sha256.slice(0, 12)}…`),
    el("td", {}, a.producer_job_id ? el("a", { href: `#/jobs/${a.producer_job_id}`, class: "mono" }, a.producer_job_id) : ""),
    el("td", {}, formatTime(a.created_at)),
    el("td", {}, el("button", { class: "download", onclick: () => download(a.id, a.name) }, "Download"))));
  view.replaceChildren(
    el("h1", {}, "Artifacts"),
    rows.length ? table(["id", "name", "kind", "format", "size", "sha256", "produced by", "created", ""], rows)
      : el("p", { class: "muted", id: "no-artifacts" }, "No artifacts yet."),
    el("div", { class: "pager" },
      el("button", { id: "prev-page", disabled: !cursors.length, onclick: () => go(cursors.slice(0, -1)) }, "← Newer"),
      el("button", { id: "next-page", disabled: !page.next_cursor, onclick: () => go([...cursors, page.next_cursor]) },
        "Older →")));
}
