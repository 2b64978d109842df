// The /v1 API from the browser. The key lives in this tab's sessionStorage only: it goes
// out as a Bearer header, never in a URL, and is forgotten when the tab closes.
const KEY = "trajx.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export const isTerminal = (status) => TERMINAL.has(status);

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || `http_${status}`;
  }
}

// Whether the server answered the latest request: `since` is when it stopped answering.
// Pages listen for "trajx:connection" to mark what they show as stale.
export const connection = { online: true, since: null };

function setOnline(online) {
  if (connection.online === online) return;
  connection.online = online;
  connection.since = online ? null : new Date();
  window.dispatchEvent(new Event("trajx:connection"));
}

// `key` (sign-in only) tries a key that is not stored yet; a refused stored key signs out.
export async function request(path, { method = "GET", headers = {}, signal, key, body } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method, signal, cache: "no-store", body,
      headers: { Accept: "application/json", ...headers, Authorization: `Bearer ${key ?? session.key()}` },
    });
  } catch (error) {
    if (!signal || !signal.aborted) setOnline(false); // no answer at all: the server or the network is down
    throw error;
  }
  setOnline(response.status !== 502 && response.status !== 503 && response.status !== 504);
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    if (response.status === 401 && key === undefined) {
      session.signOut();
      window.dispatchEvent(new CustomEvent("trajx:signed-out", { detail: { refused: true } }));
    }
    throw new ApiError(response.status, problem);
  }
  return response;
}

export const sendJson = (path, method, payload, options = {}) => request(path, {
  ...options, method, body: JSON.stringify(payload), headers: { "Content-Type": "application/json" },
}).then((response) => (response.status === 204 ? null : response.json()));

export const getJson = async (path, options) => (await request(path, options)).json();

export const query = (params) => {
  const kept = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return kept.length ? `?${new URLSearchParams(kept)}` : "";
};

// Save an artifact: fetched with the header (a plain link could not carry it), then handed
// to the browser as a blob URL.
export async function download(artifactId, name) {
  const blob = await (await request(`/v1/artifacts/${artifactId}/content`, { headers: { Accept: "*/*" } })).blob();
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// Parse a text/event-stream body into {id, event, data} messages (the HTML standard's rules).
async function* messages(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", data = [], event = "", id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { id, event: event || "message", data: data.join("\n") };
        data = []; event = "";
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") data.push(text);
        else if (field === "event") event = text;
        else if (field === "id") id = text;
      }
    }
  }
}

// Call onEvent(event) for each of the job's events, live, until the job is finished or
// `signal` aborts. A dropped stream is resumed after the last event seen (Last-Event-ID).
export async function followEvents(jobId, onEvent, signal) {
  let lastId = null;
  for (let failures = 0; !signal.aborted;) {
    try {
      const headers = { Accept: "text/event-stream", ...(lastId === null ? {} : { "Last-Event-ID": lastId }) };
      const response = await request(`/v1/jobs/${jobId}/events`, { headers, signal });
      for await (const message of messages(response.body)) {
        lastId = message.id;
        failures = 0;
        onEvent(JSON.parse(message.data));
      }
      // The server ends the stream once the job is finished, or after its time limit.
      const job = await getJson(`/v1/jobs/${jobId}`, { signal });
      if (isTerminal(job.status)) return;
    } catch (error) {
      if (error instanceof ApiError && error.status === 429) return pollEvents(jobId, lastId, onEvent, signal);
      if (signal.aborted || error instanceof ApiError) return;
      failures += 1;
      await sleep(Math.min(500 * 2 ** failures, 10_000));
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The same as followEvents by polling pages, for when the server refuses another stream (429).
async function pollEvents(jobId, lastId, onEvent, signal) {
  let cursor = lastId;
  while (!signal.aborted) {
    // Status first: a job seen finished has its final event in the read that follows.
    const done = isTerminal((await getJson(`/v1/jobs/${jobId}`, { signal })).status);
    const page = await getJson(`/v1/jobs/${jobId}/events${query({ cursor, limit: 1000 })}`, { signal });
    page.data.forEach(onEvent);
    if (page.data.length) cursor = page.data[page.data.length - 1].id;
    else if (done) return;
    else await sleep(2000);
  }
}
