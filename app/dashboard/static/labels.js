// A job's name and labels, editable on its page (PATCH /v1/jobs/<id>).
import { el } from "./dom.js";

const parseLabels = (text) => [...new Set(text.split(",").map((l) => l.trim()).filter(Boolean))];

export function labelsEditor(job, save) {
  const name = el("input", { id: "job-name", name: "name", value: job.name || "", placeholder: "a name for this run",
    maxlength: 200 });
  const labels = el("input", { id: "job-labels", name: "labels", value: (job.labels || []).join(", "),
    placeholder: "labels, comma-separated" });
  const message = el("span", { class: "muted", id: "labels-message", role: "status" });
  const form = el("form", { class: "labels card", id: "labels-form" },
    el("label", { for: "job-name" }, "Name"), name,
    el("label", { for: "job-labels" }, "Labels"), labels,
    el("button", { type: "submit" }, "Save"), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.className = "muted";
    try {
      const saved = await save({ name: name.value.trim() || null, labels: parseLabels(labels.value) });
      labels.value = (saved.labels || []).join(", ");
      message.textContent = "saved";
    } catch (error) {
      message.className = "error";
      message.textContent = error.message;
    }
  });
  return form;
}
