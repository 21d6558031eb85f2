// The request and response of a call as copyable curl, Python and JSON.

import { apiKey } from "./api.js";
import { el } from "./dom.js";

/** `value` as a Python literal (JSON's true/false/null are not Python), objects indented. */
export function pyLiteral(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value !== "object") return JSON.stringify(value);
  const inner = `${indent}    `;
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== "object")) return `[${value.map((v) => pyLiteral(v)).join(", ")}]`;
    return `[\n${value.map((v) => inner + pyLiteral(v, inner)).join(",\n")},\n${indent}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pyLiteral(v, inner)}`).join(",\n")},\n${indent}}`;
}

const shellQuote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

/** curl and Python for POSTing `body` to `path` on this node. */
export function snippets(path, body) {
  const url = `${location.origin}${path}`;
  const payload = JSON.stringify(body);
  const auth = apiKey() ? ` \\\n  -H 'Authorization: Bearer <key>'` : "";
  const curl = `curl -s ${shellQuote(url)} \\\n  -H 'content-type: application/json'${auth} \\\n  -d ${shellQuote(payload)}`;
  const pyHeaders = apiKey() ? `,\n    headers={"Authorization": "Bearer <key>"}` : "";
  const python = `import requests\n\nresponse = requests.post(\n    ${JSON.stringify(url)},\n    json=${pyLiteral(body, "    ")}${pyHeaders},\n)\nresponse.raise_for_status()\nprint(response.json())`;
  return { curl, python };
}

function codeBlock(label, text, kind) {
  const pre = el("pre", { class: "code", "data-snippet": kind }, text);
  const copy = el(
    "button",
    {
      class: "ghost small",
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(text);
          copy.textContent = "Copied";
        } catch (_) {
          // Clipboard needs a secure context; select the text instead.
          getSelection().selectAllChildren(pre);
          copy.textContent = "Selected";
        }
        setTimeout(() => (copy.textContent = "Copy"), 1500);
      },
    },
    "Copy",
  );
  return el("div", { class: "snippet" }, el("div", { class: "snippet-head" }, el("span", {}, label), copy), pre);
}

/** The request, the response and both as code, under `target`. */
export function showExchange(target, path, body, response) {
  const { curl, python } = snippets(path, body);
  const blocks = [codeBlock("curl", curl, "curl"), codeBlock("Python", python, "python")];
  if (response !== undefined) blocks.push(codeBlock("Response", JSON.stringify(response, null, 2), "response"));
  target.replaceChildren(...blocks);
}
