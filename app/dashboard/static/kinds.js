// What a job page shows of its kind's results: a transfer's per-step charts, an average
// job's candidates with the chosen one marked, an align job's barrier curve naive vs
// aligned, and for any other kind its summary. Each view takes live progress events and,
// once the job succeeded, its report.json (extra fields in either are ignored).
import { OverlayChart, TargetCharts } from "./charts.js";
import { el, formatNumber, formatPercent, table } from "./dom.js";

const metric = (row, name) => ((row && row.metrics) || {})[name];

class CandidatesView {
  constructor(container, job) {
    this.candidates = new Map(); // label -> described candidate
    this.chosen = ((job.summary || {}).best || {}).label || null;
    this.box = el("div", { id: "candidates" });
    container.append(el("h2", {}, "Candidates"), this.box);
    this.draw();
  }

  addProgress(data) {
    if (typeof data.label === "string") this.candidates.set(data.label, data);
    this.draw();
  }

  setReport(report) {
    for (const candidate of report.candidates || []) this.candidates.set(candidate.label, candidate);
    this.chosen = ((report.summary || {}).best || {}).label || this.chosen;
    this.draw();
  }

  draw() {
    if (!this.candidates.size) {
      this.box.replaceChildren(el("p", { class: "muted" }, "Candidates appear as they are scored."));
      return;
    }
    const rows = [...this.candidates.values()].map((c) => {
      const chosen = c.label === this.chosen;
      return el("tr", { class: chosen ? "chosen" : null, dataset: { candidate: c.label, chosen: chosen ? "true" : null } },
        el("td", {}, c.label), el("td", { class: "num" }, c.checkpoints ?? "—"), el("td", { class: "num" }, c.newest ?? "—"),
        el("td", { class: "num" }, formatPercent(metric(c, "accuracy"))), el("td", { class: "num" }, formatNumber(metric(c, "loss"))),
        el("td", {}, chosen ? "✓ chosen" : ""));
    });
    this.box.replaceChildren(table(["candidate", "checkpoints", "newest", "held-out acc.", "held-out loss", ""], rows));
  }
}

const PATHS = { plain: "naive (no permutation)", aligned: "aligned" };

class BarrierView {
  constructor(container, job) {
    this.barriers = {}; // path -> {loss_barrier, accuracy_barrier}
    const summary = job.summary || {};
    for (const path of Object.keys(PATHS)) {
      if (typeof summary[`${path}_loss_barrier`] === "number") {
        this.barriers[path] = { loss_barrier: summary[`${path}_loss_barrier`],
          accuracy_barrier: summary[`${path}_accuracy_barrier`] };
      }
    }
    this.table = el("div", { id: "barriers" });
    const grid = el("div", { class: "chart-grid", id: "barrier-curve" });
    container.append(el("h2", {}, "Interpolation from A to B: naive vs aligned"), this.table, grid);
    this.loss = new OverlayChart(grid, { title: "held-out loss along (1−α)·A + α·B", metric: "loss", x: "α", y: "loss" });
    this.accuracy = new OverlayChart(grid, { title: "held-out accuracy along (1−α)·A + α·B", metric: "accuracy",
      x: "α", y: "accuracy" });
    this.draw();
  }

  addProgress(data) {
    if (typeof data.path === "string") this.barriers[data.path] = { ...this.barriers[data.path], loss_barrier: data.loss_barrier };
    this.draw();
  }

  setReport(report) {
    const curves = report.curves || {};
    const lines = (key) => Object.keys(PATHS).filter((path) => curves[path]).map((path) => ({
      label: PATHS[path], points: (curves[path].points || []).map((p) => [p.alpha, p[key]]) }));
    for (const path of Object.keys(curves)) this.barriers[path] = curves[path];
    this.loss.set(lines("loss"));
    this.accuracy.set(lines("accuracy"));
    this.draw();
  }

  draw() {
    const rows = Object.keys(PATHS).filter((path) => this.barriers[path]).map((path) => el("tr", { dataset: { path } },
      el("td", {}, PATHS[path]), el("td", { class: "num" }, formatNumber(this.barriers[path].loss_barrier)),
      el("td", { class: "num" }, formatPercent(this.barriers[path].accuracy_barrier))));
    this.table.replaceChildren(rows.length ? table(["path", "loss barrier", "accuracy barrier"], rows)
      : el("p", { class: "muted" }, "The barriers appear as each path is measured."));
  }
}

class TransferView {
  constructor(container) {
    const box = el("div", { class: "charts", id: "charts" });
    container.append(el("h2", {}, "Per-step metrics"), box);
    this.charts = new TargetCharts(box);
  }

  addProgress(data) { this.charts.addProgress(data); }

  setReport(report) { this.charts.setReport(report.targets || []); }
}

// A kind this page has no view for (a newer server): its summary as a table.
class SummaryView {
  constructor(container, job) {
    this.box = el("div", { id: "kind-summary" });
    container.append(el("h2", {}, "Summary"), this.box);
    this.setReport({ summary: job.summary });
  }

  addProgress() {}

  setReport(report) {
    const entries = Object.entries(report.summary || {}).filter(([, v]) => v === null || typeof v !== "object");
    this.box.replaceChildren(entries.length ? table(["", ""], entries.map(([k, v]) => el("tr", {},
      el("td", {}, k), el("td", { class: "num" }, typeof v === "number" ? formatNumber(v) : String(v)))))
      : el("p", { class: "muted" }, "No summary yet."));
  }
}

const VIEWS = { transfer: TransferView, average: CandidatesView, align: BarrierView };

export const kindView = (job, container) => new (VIEWS[job.kind] || SummaryView)(container, job);

// One line for a progress event, whatever the kind reported.
export function describeProgress(d) {
  const of = `(${d.step}/${d.total})`;
  const accuracy = (m) => (typeof (m || {}).accuracy === "number" ? `, accuracy ${formatPercent(m.accuracy)}` : "");
  if (typeof d.target === "number") return `target ${d.target} step ${d.target_step} ${of}${accuracy(d.metrics)}`;
  if (typeof d.label === "string") return `candidate ${d.label} ${of}${accuracy(d.metrics)}`;
  if (typeof d.path === "string") return `${PATHS[d.path] || d.path} path measured, loss barrier ${formatNumber(d.loss_barrier)} ${of}`;
  return `step ${d.step} of ${d.total}`;
}

// The facts of a job's kind, for the facts card: [[name, value], ...].
export function kindFacts(job) {
  const spec = job.spec || {}, s = job.summary || {};
  if (job.kind === "transfer") return [["targets", String((spec.targets || []).length || "—")]];
  if (job.kind === "average") {
    return [["checkpoints", String((spec.checkpoints || []).length || "—")],
      ["chosen candidate", (s.best || {}).label || "—"],
      ["last checkpoint accuracy", formatPercent(s.last_checkpoint_accuracy)]];
  }
  if (job.kind === "align") {
    return [["loss barrier naive → aligned", `${formatNumber(s.plain_loss_barrier)} → ${formatNumber(s.aligned_loss_barrier)}`],
      ["merged (α = 0.5) accuracy", formatPercent(s.merged_accuracy)]];
  }
  return [];
}
