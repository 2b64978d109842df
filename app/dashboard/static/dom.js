// Building DOM nodes from data. Text always goes in as text nodes, never as HTML, so a
// job name or an error message from the API cannot inject markup.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") {
      for (const [key, item] of Object.entries(value)) if (item !== null && item !== undefined) node.dataset[key] = item;
    }
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// A table in a box of its own that scrolls sideways when it is wider than the screen.
// `rows`: row elements, or a tbody the caller keeps updating.
export function table(columns, rows, attributes = {}) {
  return el("div", { class: "scroll" }, el("table", attributes,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    rows instanceof HTMLTableSectionElement ? rows : el("tbody", {}, rows)));
}

// `stale`: the server stopped answering, so the status shown may no longer hold.
export const statusBadge = (status, stale = false) => el("span", {
  class: `status ${status}${stale ? " stale" : ""}`, dataset: { status, stale: stale ? "true" : null },
  title: stale ? "as last seen: the server does not answer" : null,
}, stale ? `${status}?` : status);

export const pad = (n) => String(n).padStart(2, "0");

export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatDuration(startIso, endIso) {
  if (!startIso) return "";
  const seconds = Math.max(0, ((endIso ? new Date(endIso) : new Date()) - new Date(startIso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatBytes(size) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = size, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${size} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export const formatNumber = (x) => (typeof x === "number" ? x.toPrecision(4) : "—");

export const formatPercent = (x) => (typeof x === "number" ? `${(100 * x).toFixed(1)}%` : "—");

// A spec's method as text: a name ("fgmt"), or an object ({name: "ema", decay: 0.9}) as
// "ema decay=0.9".
function methodLabel(method) {
  if (typeof method === "string") return method;
  if (!method || typeof method !== "object") return "—";
  const params = Object.entries(method).filter(([k, v]) => k !== "name" && v !== null && v !== undefined && v !== false);
  return [method.name || "?", ...params.map(([k, v]) => (v === true ? k : `${k}=${v}`))].join(" ");
}

// What the listing shows of a job: method, architecture, how many targets and its best
// held-out accuracy, from its spec and summary whatever its kind (absent ones: a dash).
export function jobFacts(job) {
  const spec = job.spec || {};
  const summary = job.summary || {};
  const accuracies = (summary.targets || []).map((t) => t.best_accuracy)
    .concat([summary.best_accuracy, summary.merged_accuracy]).filter((a) => typeof a === "number");
  const count = Array.isArray(spec.targets) ? spec.targets.length : null;
  return {
    method: methodLabel(spec.method),
    arch: (spec.arch && (spec.arch.name || (spec.arch.program && "program"))) || "—",
    targets: count,
    bestAccuracy: accuracies.length ? Math.max(...accuracies) : null,
  };
}

export const jobTitle = (job) => job.name || job.id;

export function progressText(job) {
  const { step, total } = job.progress || {};
  if (job.status === "queued") return "queued";
  if (!total) return "";
  return `${step}/${total} (${Math.round((100 * step) / total)}%)`;
}
