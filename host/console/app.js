// The console's shell: the node banner, the API key button and hash routing
// between the views (#/models, #/models/{name}, #/metrics).

import { apiKey, json } from "./api.js";
import { renderModels } from "./models.js";
import { renderModel } from "./model.js";
import { renderMetrics } from "./metrics.js";
import { el } from "./dom.js";

let cleanup = null;

async function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const view = document.getElementById("view");
  view.replaceChildren();
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  const [section, name] = hash.split("/", 2);
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === (section || "models"));
  }
  if (section === "metrics") cleanup = renderMetrics(view);
  else if (section === "models" && name) cleanup = renderModel(view, name);
  else cleanup = renderModels(view);
}

async function nodeInfo() {
  const info = document.getElementById("node-info");
  try {
    const server = await json("/v2");
    // The api says what runs: the GPU's graphics API, or the CPU's SIMD level.
    const device = server.device ? `${server.device.kind} · ${server.device.name} · ${server.device.api}` : "";
    info.replaceChildren(el("span", { class: "pill" }, `v${server.version}`), el("span", { class: "muted" }, device));
  } catch (e) {
    info.replaceChildren(el("span", { class: "pill bad" }, e.message));
  }
}

function keyButton() {
  const button = document.getElementById("key-button");
  const label = () => {
    button.textContent = apiKey() ? "API key ✓" : "API key";
  };
  label();
  button.addEventListener("click", () => {
    const dialog = document.getElementById("key-dialog");
    dialog.querySelector(".key-message").textContent = apiKey() ? "A key is set. Enter a new one, or leave empty and confirm to clear it." : "";
    dialog.querySelector("input").value = "";
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue !== "ok") return;
        const key = dialog.querySelector("input").value.trim();
        if (key) sessionStorage.setItem("edgeserve.apiKey", key);
        else sessionStorage.removeItem("edgeserve.apiKey");
        label();
        nodeInfo();
        route();
      },
      { once: true },
    );
    dialog.showModal();
  });
  window.addEventListener("storage", label);
  setInterval(label, 1000);
}

window.addEventListener("hashchange", route);
keyButton();
nodeInfo();
route();
