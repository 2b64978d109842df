// Building DOM nodes from data. Text always goes in as text nodes, never as HTML, so a
// job name or an error message from the API cannot inject markup.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function table(columns, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows));
}

export const statusBadge = (status) => el("span", { class: `status ${status}`, dataset: { status } }, status);

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

export const formatPercent = (x) => (typeof x === "number" ? `${(100 * x).toFixed(1)}%` : "—");

// What the listing shows of a job: method, architecture and best held-out accuracy
// come from its spec and summary, whatever its kind (absent ones show as a dash).
export function jobFacts(job) {
  const spec = job.spec || {};
  const accuracies = ((job.summary || {}).targets || []).map((t) => t.best_accuracy).filter((a) => typeof a === "number");
  return {
    method: spec.method || "—",
    arch: (spec.arch && (spec.arch.name || (spec.arch.program && "program"))) || "—",
    bestAccuracy: accuracies.length ? Math.max(...accuracies) : null,
  };
}

export function progressText(job) {
  const { step, total } = job.progress || {};
  if (job.status === "queued") return "queued";
  if (!total) return "";
  return `${step}/${total} (${Math.round((100 * step) / total)}%)`;
}
