// Downloads the browser streams straight to disk: the page asks the API for a short-lived
// signed link and follows it (a plain link cannot carry the Bearer header, and fetching
// the bytes into a blob would hold the whole file in this tab's memory).
import { sendJson } from "./api.js";
import { el } from "./dom.js";

async function downloadArtifact(artifactId, name, signal) {
  const link = await sendJson(`/v1/artifacts/${artifactId}/link`, "POST", {}, { signal });
  const anchor = el("a", { href: link.url, download: name, hidden: true });
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
}

export const downloadButton = (artifactId, name, signal) => el("button", {
  class: "download", type: "button", onclick: () => downloadArtifact(artifactId, name, signal),
}, "Download");

// The same download from a shell, with the key from the environment (never the page's key).
export function curlLine(artifactId, name) {
  const command = `curl -fLo '${name.replaceAll("'", "")}' -H "Authorization: Bearer $TRAJX_API_KEY" `
    + `${location.origin}/v1/artifacts/${artifactId}/content`;
  const copy = el("button", { type: "button", class: "link copy", title: command, dataset: { command } }, "curl");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(command);
      copy.textContent = "copied";
    } catch {
      window.prompt("Copy this command:", command); // no clipboard access (an http:// origin other than localhost)
    }
  });
  return copy;
}
