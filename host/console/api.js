// Calls to this node's API. A 401 asks the user for an API key (kept in
// sessionStorage, sent as a bearer token) and retries; any other error
// becomes an ApiError carrying the server's own message.

const KEY = "edgeserve.apiKey";

/** An API call that failed: `status` (0 when the node was unreachable) and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

function headers(extra) {
  const h = new Headers(extra || {});
  const key = apiKey();
  if (key) h.set("Authorization", `Bearer ${key}`);
  return h;
}

/** Asks for a key in the page's dialog; resolves with it, or null when cancelled. */
function askForKey(message) {
  const dialog = document.getElementById("key-dialog");
  const input = dialog.querySelector("input");
  dialog.querySelector(".key-message").textContent = message;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null),
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const message = body.error?.message ?? body.error ?? body.message;
    if (message) return new ApiError(response.status, String(message));
  } catch (_) {
    /* not JSON: use the text */
  }
  return new ApiError(response.status, `${response.status} ${response.statusText}${text ? `: ${text.slice(0, 300)}` : ""}`);
}

let asking = null;

/**
 * fetch() against this node with the API key; resolves with the Response of
 * a 2xx, throws ApiError otherwise.
 */
export async function request(path, options = {}) {
  for (;;) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: headers(options.headers) });
    } catch (e) {
      throw new ApiError(0, `the node did not answer (${e.message})`);
    }
    if (response.status !== 401) {
      if (!response.ok) throw await errorOf(response);
      return response;
    }
    const error = await errorOf(response);
    // One dialog for every call that hit the 401 at the same time.
    asking ??= askForKey(
      apiKey() ? `The key was refused: ${error.message}` : "This node requires an API key.",
    ).finally(() => {
      asking = null;
    });
    const key = await asking;
    if (!key) throw error;
    sessionStorage.setItem(KEY, key);
  }
}

/** GET or POST JSON; resolves with the parsed body. */
export async function json(path, body, method) {
  const options = body === undefined
    ? { method: method || "GET" }
    : { method: method || "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } };
  const response = await request(path, options);
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

export const repositoryIndex = () => json("/v2/repository/index", {});
export const modelMetadata = (name) => json(`/v2/models/${encodeURIComponent(name)}`);
export const loadModel = (name) => json(`/v2/repository/models/${encodeURIComponent(name)}/load`, {});
export const unloadModel = (name) => json(`/v2/repository/models/${encodeURIComponent(name)}/unload`, {});
export const infer = (name, body) => json(`/v2/models/${encodeURIComponent(name)}/infer`, body);
export const metricsText = async () => (await request("/metrics")).text();
