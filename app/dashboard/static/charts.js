// Per-target charts of a job's per-step metrics (uPlot, vendored): held-out accuracy and
// loss on one chart, the matching objective on another, the step's seconds on a third.
// Points arrive while the job runs (progress events) or all at once from a finished
// job's report.
import { el } from "./dom.js";

const WIDTH = 350, HEIGHT = 220;
const COLORS = { accuracy: "#2156c9", loss: "#c0392b", objective: "#1b7f3b",
  gradient: "#7a4fc9", matching: "#c98a1f", evaluation: "#5f7a8a" };
// Per-step seconds the engine measures (the metrics' `<name>_seconds` keys).
const TIMINGS = ["gradient", "matching", "evaluation"];

function series(label, scale) {
  return { label, scale, stroke: COLORS[label], width: 2, points: { show: true, size: 5 } };
}

function accuracyLossOptions(title) {
  return {
    title, width: WIDTH, height: HEIGHT, scales: { x: { time: false } },
    series: [{ label: "step" }, series("accuracy", "acc"), series("loss", "loss")],
    axes: [{ label: "step" }, { scale: "acc", label: "accuracy" },
      { scale: "loss", label: "loss", side: 1, grid: { show: false } }],
  };
}

function objectiveOptions(title) {
  return {
    title, width: WIDTH, height: HEIGHT, scales: { x: { time: false } },
    series: [{ label: "step" }, series("objective", "y")],
    axes: [{ label: "step" }, { scale: "y", label: "Σ⟨g₂, π g₁⟩", size: 70 }],
  };
}

function timingOptions(title) {
  return {
    title, width: WIDTH, height: HEIGHT, scales: { x: { time: false } },
    series: [{ label: "step" }, ...TIMINGS.map((name) => series(name, "s"))],
    axes: [{ label: "step" }, { scale: "s", label: "seconds" }],
  };
}

class TargetChart {
  constructor(target, container) {
    this.rows = new Map(); // step -> metrics
    this.frame = el("div", { class: "target-charts", dataset: { target, points: 0 } },
      el("h3", {}, `Target ${target}`));
    container.append(this.frame);
    this.accuracy = this.plot(accuracyLossOptions("held-out accuracy and loss"), "accuracy");
    this.objective = this.plot(objectiveOptions("matching objective"), "objective");
    this.timing = this.plot(timingOptions("seconds per step"), "seconds");
  }

  plot(options, metric) {
    const holder = el("div", { class: "chart", dataset: { metric, points: 0 } });
    this.frame.append(holder);
    return { holder, chart: new window.uPlot(options, options.series.map(() => []), holder) };
  }

  set(rows) {
    this.rows = new Map(rows.map((row) => [row.step, row]));
    this.redraw();
  }

  add(row) {
    if (this.rows.has(row.step)) return;
    this.rows.set(row.step, row);
    this.redraw();
  }

  redraw() {
    const rows = [...this.rows.values()].sort((a, b) => a.step - b.step);
    const column = (name) => rows.map((row) => (typeof row[name] === "number" ? row[name] : null));
    const steps = rows.map((row) => row.step);
    this.draw(this.accuracy, [steps, column("accuracy"), column("loss")]);
    this.draw(this.objective, [steps, column("objective")]);
    this.draw(this.timing, [steps, ...TIMINGS.map((name) => column(`${name}_seconds`))]);
    this.frame.dataset.points = rows.length;
    this.frame.dataset.lastStep = steps.length ? steps[steps.length - 1] : 0;
  }

  draw({ holder, chart }, data) {
    chart.setData(data);
    // What tests and people can read without the canvas: points that carry a value.
    holder.dataset.points = data[1].filter((v) => v !== null).length;
  }
}

export class JobCharts {
  constructor(container) {
    this.container = container;
    this.targets = new Map();
  }

  target(index) {
    if (!this.targets.has(index)) this.targets.set(index, new TargetChart(index, this.container));
    return this.targets.get(index);
  }

  // A progress event's data: {target, target_step, metrics, steps: [every step since the
  // previous event, the same shape]} (`steps` absent: that one step only).
  addProgress(data) {
    for (const { target, target_step: step, metrics } of data.steps || [data]) {
      if (typeof target === "number" && typeof step === "number") this.target(target).add({ ...(metrics || {}), step });
    }
  }

  // A report's `targets`: [{steps: [{step, accuracy, loss, objective, ...}]}].
  setReport(targets) {
    targets.forEach((target, index) => this.target(index).set(target.steps || []));
  }
}
