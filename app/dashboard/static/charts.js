// Overlay charts (uPlot, vendored): one chart per metric, one line per target (or per job
// and target on the compare page), the best point of each line marked, and a per-line
// summary table (last, best, best step) under them.
import { el, formatNumber, formatPercent, table } from "./dom.js";

const HEIGHT = 240;
const PALETTE = ["#2156c9", "#c0392b", "#1b7f3b", "#7a4fc9", "#c98a1f", "#0f8a8a", "#b5397a", "#5f7a8a",
  "#8a6d3b", "#333d4d"];
// Per-step seconds the engine measures (the metrics' `<name>_seconds` keys).
const TIMINGS = ["gradient", "matching", "evaluation"];

const colorOf = (index) => PALETTE[index % PALETTE.length];

// The best point of a line: the highest (`max`) or lowest (`min`) value, the earliest on ties.
function bestPoint(points, best) {
  let found = null;
  for (const [x, y] of points) {
    if (typeof y !== "number") continue;
    if (found === null || (best === "max" ? y > found[1] : y < found[1])) found = [x, y];
  }
  return found;
}

// One chart of several lines: `set([{label, points: [[x, y], ...]}])`. With `best`
// ("max" or "min") each line's best point gets a marker of its own colour.
export class OverlayChart {
  constructor(container, { title, metric, x = "step", y, best = null }) {
    this.options = { title, x, y, best };
    this.holder = el("div", { class: "chart", dataset: { metric, points: 0, series: 0 } });
    container.append(this.holder);
    this.chart = null;
    this.signature = "";
    new ResizeObserver(() => { if (this.chart) this.chart.setSize({ width: this.width(), height: HEIGHT }); })
      .observe(this.holder);
  }

  // The chart's box decides (a grid cell: one column on a phone, several on a wide screen).
  width() {
    return Math.max(240, Math.min(640, (this.holder.clientWidth || 560) - 12));
  }

  set(lines) {
    const xs = [...new Set(lines.flatMap((line) => line.points.map(([x]) => x)))].sort((a, b) => a - b);
    const columns = lines.map((line) => {
      const byX = new Map(line.points);
      return xs.map((x) => (typeof byX.get(x) === "number" ? byX.get(x) : null));
    });
    const marks = this.options.best ? lines.map((line) => {
      const best = bestPoint(line.points, this.options.best);
      return xs.map((x) => (best && x === best[0] ? best[1] : null));
    }) : [];
    const signature = lines.map((line) => line.label).join("\n");
    if (!this.chart || signature !== this.signature) this.build(lines, signature);
    this.chart.setData([xs, ...columns, ...marks]);
    this.holder.dataset.points = columns.reduce((n, column) => n + column.filter((v) => v !== null).length, 0);
    this.holder.dataset.series = lines.length;
  }

  build(lines, signature) {
    if (this.chart) this.chart.destroy();
    const { title, x, y, best } = this.options;
    const series = [{ label: x }, ...lines.map((line, i) => ({
      label: line.label, stroke: colorOf(i), width: 2, spanGaps: true, points: { show: true, size: 4 },
    }))];
    if (best) {
      lines.forEach((line, i) => series.push({
        label: `${best === "max" ? "best" : "lowest"} · ${line.label}`, stroke: colorOf(i), fill: colorOf(i),
        paths: () => null, points: { show: true, size: 11, width: 2 },
      }));
    }
    this.chart = new window.uPlot({
      title, width: this.width(), height: HEIGHT, scales: { x: { time: false } }, series,
      axes: [{ label: x }, { label: y, size: 60 }], legend: { live: false },
    }, series.map(() => []), this.holder);
    this.signature = signature;
  }
}

// A line's summary: value at its last point, best value and where.
function summarize(points, best) {
  const valued = points.filter(([, y]) => typeof y === "number");
  const top = bestPoint(valued, best);
  return { points: valued.length, last: valued.length ? valued[valued.length - 1][1] : null,
    lastStep: valued.length ? valued[valued.length - 1][0] : null, best: top && top[1], bestStep: top && top[0] };
}


// The table under the charts: one row per line (`rows`: [{label, key, accuracy, loss}]
// with `accuracy`/`loss` lists of [step, value]).
function summaryTable(rows) {
  return table(["", "line", "steps", "last acc.", "best acc.", "best step", "last loss", "lowest loss"],
    rows.map((row, i) => {
      const acc = summarize(row.accuracy, "max"), loss = summarize(row.loss, "min");
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = colorOf(i); // CSSOM, which the CSP allows (a style attribute it would not)
      return el("tr", { dataset: { line: row.key, bestStep: acc.bestStep ?? "", lastStep: acc.lastStep ?? "" } },
        el("td", {}, swatch),
        el("td", {}, row.label),
        el("td", { class: "num" }, String(Math.max(acc.points, loss.points))),
        el("td", { class: "num" }, formatPercent(acc.last)),
        el("td", { class: "num" }, formatPercent(acc.best)),
        el("td", { class: "num", dataset: { fact: "best-step" } }, acc.bestStep ?? "—"),
        el("td", { class: "num" }, formatNumber(loss.last)),
        el("td", { class: "num" }, formatNumber(loss.best)));
    }));
}

// Per-step metrics of a transfer job's targets: accuracy, loss, matching objective and
// seconds per step, each an overlay of the targets, plus the summary table. Points arrive
// while the job runs (progress events) or all at once from a finished job's report.
export class TargetCharts {
  constructor(container, { label = (target) => `target ${target}` } = {}) {
    this.label = label;
    this.targets = new Map(); // target -> Map(step -> metrics)
    const grid = el("div", { class: "chart-grid" });
    this.summary = el("div", { class: "summary", id: "target-summary" });
    container.append(this.summary, grid);
    this.charts = {
      accuracy: new OverlayChart(grid, { title: "held-out accuracy", metric: "accuracy", y: "accuracy", best: "max" }),
      loss: new OverlayChart(grid, { title: "held-out loss", metric: "loss", y: "loss", best: "min" }),
      objective: new OverlayChart(grid, { title: "matching objective Σ⟨g₂, π g₁⟩", metric: "objective", y: "objective" }),
      seconds: new OverlayChart(grid, { title: "seconds per step", metric: "seconds", y: "seconds" }),
    };
  }

  rows(target) {
    if (!this.targets.has(target)) this.targets.set(target, new Map());
    return this.targets.get(target);
  }

  // A progress event's data: {target, target_step, metrics, steps: [every step since the
  // previous event, the same shape]} (`steps` absent: that one step only). A step at or
  // before one already shown means the job started over from there (a retry): the later
  // points it shows are from the attempt that was lost, so they go.
  addProgress(data) {
    for (const { target, target_step: step, metrics } of data.steps || [data]) {
      if (typeof target !== "number" || typeof step !== "number") continue;
      const rows = this.rows(target);
      for (const seen of [...rows.keys()]) if (seen >= step) rows.delete(seen);
      rows.set(step, { ...(metrics || {}), step });
    }
    this.redraw();
  }

  // A report's `targets`: [{steps: [{step, accuracy, loss, objective, ...}]}].
  setReport(targets) {
    targets.forEach((target, index) => this.setRows(index, target.steps || [], false));
    this.redraw();
  }

  // One line's every step at once (`key`: a target, or on the compare page job and target).
  setRows(key, rows, redraw = true) {
    this.targets.set(key, new Map(rows.map((row) => [row.step, row])));
    if (redraw) this.redraw();
  }

  redraw() {
    const targets = [...this.targets.keys()].sort((a, b) => (typeof a === "number" ? a - b : 0));
    const column = (target, pick) => [...this.targets.get(target).values()].sort((a, b) => a.step - b.step)
      .map((row) => [row.step, pick(row)]);
    const value = (name) => (row) => (typeof row[name] === "number" ? row[name] : null);
    const seconds = (row) => {
      const parts = TIMINGS.map((name) => row[`${name}_seconds`]).filter((s) => typeof s === "number");
      return parts.length ? parts.reduce((a, b) => a + b, 0) : null;
    };
    const lines = (pick) => targets.map((t) => ({ label: this.label(t), points: column(t, pick) }));
    this.charts.accuracy.set(lines(value("accuracy")));
    this.charts.loss.set(lines(value("loss")));
    this.charts.objective.set(lines(value("objective")));
    this.charts.seconds.set(lines(seconds));
    this.summary.replaceChildren(summaryTable(targets.map((t) => ({
      key: t, label: this.label(t), accuracy: column(t, value("accuracy")), loss: column(t, value("loss")) }))));
  }
}
