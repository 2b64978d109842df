// The dashboard's entry: sign-in, the connection notice and a hash router (#/jobs,
// #/jobs/<id>, #/compare?jobs=..., #/artifacts, #/workers). Each view gets an AbortSignal
// that fires when the user navigates away, which stops its event stream and timers.
import { connection, getJson, session } from "./api.js";
import { el, formatTime } from "./dom.js";
import { renderArtifacts } from "./artifacts.js";
import { renderCompare } from "./compare.js";
import { renderJob } from "./job.js";
import { renderJobs } from "./jobs.js";
import { renderWorkers } from "./workers.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const notice = document.getElementById("connection");
let current = new AbortController();
let signInMessage = ""; // why the last session ended, shown on the sign-in form

// Where this server keeps its local key (the embedded server), else a generic hint.
async function keyHint() {
  const hint = await fetch("/dashboard/sign-in.json", { cache: "no-store" }).then((r) => r.json()).catch(() => ({}));
  return hint.local_key_file
    ? ["This server wrote its local key to ", el("code", { id: "key-file" }, hint.local_key_file), "."]
    : ["Ask the server's operator for a key (", el("code", {}, "trajx admin create-key"), ")."];
}

function signInForm() {
  const input = el("input", { type: "password", name: "api-key", id: "api-key", autocomplete: "off",
    placeholder: "trx_…", required: true, autofocus: true });
  const message = el("p", { class: "error", id: "sign-in-error", role: "alert" }, signInMessage);
  const hint = el("span", { id: "sign-in-hint" });
  const form = el("form", { class: "sign-in", id: "sign-in" },
    el("h1", {}, "Sign in"),
    el("label", { for: "api-key" }, "API key"),
    input,
    el("p", { class: "muted" }, "Kept in this browser tab only (sessionStorage), sent as a Bearer header. ", hint),
    el("button", { type: "submit" }, "Sign in"),
    message);
  keyHint().then((parts) => hint.replaceChildren(...parts));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    try {
      await getJson("/v1/jobs?limit=1", { key });
      session.signIn(key);
      signInMessage = "";
      route();
    } catch (error) {
      message.textContent = error.status === 401 ? "This API key was refused." : `Sign-in failed: ${error.message}`;
    }
  });
  return form;
}

function showConnection() {
  notice.hidden = connection.online;
  document.body.classList.toggle("offline", !connection.online);
  if (!connection.online) {
    notice.textContent = `The server has not answered since ${formatTime(connection.since.toISOString())}: `
      + "what this page shows may be out of date. Retrying…";
  }
}

// The view as one render sees it: once the user has moved on (its signal aborted), a render
// whose fetch had already answered can no longer replace the page now shown.
const viewOf = (signal) => ({
  replaceChildren: (...nodes) => { if (!signal.aborted) view.replaceChildren(...nodes); },
});

const ROUTES = [
  [/^\/jobs\/([A-Za-z0-9_]+)$/, (page, match, params, signal) => renderJob(page, match[1], signal)],
  [/^\/compare$/, (page, match, params, signal) => renderCompare(page, params, signal)],
  [/^\/artifacts$/, (page, match, params, signal) => renderArtifacts(page, params, signal)],
  [/^\/workers$/, (page, match, params, signal) => renderWorkers(page, params, signal)],
  [/^/, (page, match, params, signal) => renderJobs(page, params, signal)],
];

function route() {
  current.abort();
  current = new AbortController();
  const signal = current.signal;
  if (!session.key()) {
    nav.hidden = true;
    view.replaceChildren(signInForm());
    document.getElementById("api-key").focus();
    return;
  }
  nav.hidden = false;
  const [path, search = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search);
  for (const link of nav.querySelectorAll("a[data-page]")) {
    link.classList.toggle("current", path.startsWith(link.dataset.page));
  }
  const [pattern, render] = ROUTES.find(([p]) => p.test(path));
  const page = viewOf(signal);
  render(page, path.match(pattern), params, signal).catch((error) => {
    page.replaceChildren(el("p", { class: "error", id: "view-error" }, error.message));
  });
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  signInMessage = "";
  location.hash = "#/jobs";
  route();
});
window.addEventListener("trajx:signed-out", (event) => {
  if (event.detail && event.detail.refused) {
    signInMessage = "The server refused this tab's API key (revoked, or the server's database was reset): "
      + "sign in with a valid key.";
  }
  route();
});
window.addEventListener("trajx:connection", showConnection);
window.addEventListener("hashchange", route);
route();
