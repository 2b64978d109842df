// The dashboard's entry: sign-in and a hash router (#/jobs, #/jobs/<id>, #/artifacts).
// Each view gets an AbortSignal that fires when the user navigates away, which stops its
// event stream and timers.
import { getJson, session } from "./api.js";
import { el } from "./dom.js";
import { renderArtifacts } from "./artifacts.js";
import { renderJob } from "./job.js";
import { renderJobs } from "./jobs.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
let current = new AbortController();

function signInForm() {
  const input = el("input", { type: "password", name: "api-key", id: "api-key", autocomplete: "off",
    placeholder: "trx_…", required: true });
  const message = el("p", { class: "error", id: "sign-in-error" });
  const form = el("form", { class: "sign-in", id: "sign-in" },
    el("h1", {}, "Sign in"),
    el("label", { for: "api-key" }, "API key"),
    input,
    el("p", { class: "muted" }, "Kept in this browser tab only (sessionStorage), sent as a Bearer header. ",
      "The embedded server writes its local key to ", el("code", {}, "var/local-api-key"), "."),
    el("button", { type: "submit" }, "Sign in"),
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    try {
      await getJson("/v1/jobs?limit=1", { key });
      session.signIn(key);
      route();
    } catch (error) {
      message.textContent = error.status === 401 ? "This API key was refused." : `Sign-in failed: ${error.message}`;
    }
  });
  return form;
}

function route() {
  current.abort();
  current = new AbortController();
  const signal = current.signal;
  if (!session.key()) {
    nav.hidden = true;
    view.replaceChildren(signInForm());
    return;
  }
  nav.hidden = false;
  const [path, search = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search);
  const job = path.match(/^\/jobs\/([A-Za-z0-9_]+)$/);
  const render = job ? renderJob(view, job[1], signal)
    : path === "/artifacts" ? renderArtifacts(view, params, signal)
      : renderJobs(view, params, signal);
  render.catch((error) => {
    if (!signal.aborted) view.replaceChildren(el("p", { class: "error", id: "view-error" }, error.message));
  });
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  location.hash = "#/jobs";
  route();
});
window.addEventListener("trajx:signed-out", route);
window.addEventListener("hashchange", route);
route();
