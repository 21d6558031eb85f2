// The models view: every model of the repository with its state, versions,
// device, instances, weight bytes and live request rate and latency, with
// load and unload buttons (the repository API).

import { loadModel, modelMetadata, repositoryIndex, unloadModel } from "./api.js";
import { bytes, el, errorBox, latency } from "./dom.js";
import { sampler, total } from "./prom.js";

const REFRESH_MS = 3000;
/** Reasons that mean "not loaded on purpose", not a failure. */
const IDLE = new Set(["unloaded", "not loaded"]);
/** The table's columns: cell key → header. */
const LABELS = { name: "Model", state: "State", versions: "Versions", device: "Device", instances: "Instances", weights: "Weights", rate: "Req/s", p50: "p50", p99: "p99", action: "" };

/** Index rows (one per loaded version) grouped into one entry per model. */
function group(index) {
  const models = new Map();
  for (const row of index) {
    const m = models.get(row.name) || { name: row.name, state: row.state, versions: [], reason: row.reason || "" };
    if (row.version) m.versions.push(row.version);
    models.set(row.name, m);
  }
  return [...models.values()];
}

function stateBadge(model) {
  if (model.state === "READY") return el("span", { class: "badge ok" }, "READY");
  if (model.reason && !IDLE.has(model.reason)) return el("span", { class: "badge bad" }, "FAILED");
  return el("span", { class: "badge idle" }, model.state);
}

/** A load error: its first line, the whole text on demand. */
function loadError(reason) {
  const [first, ...rest] = reason.split("\n");
  return el(
    "div",
    { class: "load-error", "data-reason": reason, title: reason },
    rest.length ? el("details", {}, el("summary", {}, first), rest.join("\n")) : first,
  );
}

export function renderModels(view) {
  const status = el("div", { class: "status" });
  const body = el("tbody");
  const table = el(
    "table",
    { class: "models", id: "models-table" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        Object.values(LABELS).map((h) => el("th", {}, h)),
      ),
    ),
    body,
  );
  view.append(
    el(
      "section",
      { class: "card" },
      el(
        "div",
        { class: "card-head" },
        el("h1", {}, "Models"),
        el("span", { class: "muted" }, "Latency: compute time in the instance, over the last 10 s"),
      ),
      status,
      el("div", { class: "scroll" }, table),
    ),
  );

  const rows = new Map();
  const metadata = new Map();
  let stopped = false;
  const busy = new Set();

  function stats() {
    const samples = sampler.latest();
    for (const [name, row] of rows) {
      const want = { model: name };
      const weights = samples.some((s) => s.name === "edgeserve_model_weight_bytes" && s.labels.model === name)
        ? total(samples, "edgeserve_model_weight_bytes", want)
        : null;
      const rate = sampler.rate("edgeserve_requests_total", want);
      row.cells.weights.textContent = weights === null ? "—" : bytes(weights);
      row.cells.rate.textContent = rate === null ? "—" : rate.toFixed(rate < 10 ? 2 : 0);
      row.cells.p50.textContent = latency(sampler.quantile("edgeserve_compute_duration_seconds", 0.5, want));
      row.cells.p99.textContent = latency(sampler.quantile("edgeserve_compute_duration_seconds", 0.99, want));
    }
  }

  async function act(model, action) {
    busy.add(model.name);
    status.replaceChildren(el("div", { class: "info" }, `${action === loadModel ? "Loading" : "Unloading"} ${model.name}…`));
    refresh();
    try {
      await action(model.name);
      metadata.delete(model.name);
      status.replaceChildren();
    } catch (e) {
      status.replaceChildren(errorBox(e, `${action === loadModel ? "Load" : "Unload"} ${model.name}`));
    } finally {
      busy.delete(model.name);
      await refresh();
    }
  }

  function row(model) {
    let r = rows.get(model.name);
    if (!r) {
      const cells = {};
      for (const key of Object.keys(LABELS)) {
        cells[key] = el("td", { class: `col-${key}`, "data-label": LABELS[key] });
      }
      r = { tr: el("tr", { "data-model": model.name }, Object.values(cells)), cells };
      rows.set(model.name, r);
    }
    const meta = metadata.get(model.name);
    const failed = model.reason && !IDLE.has(model.reason);
    r.tr.dataset.state = model.state;
    r.cells.name.replaceChildren(
      ...[
        el("a", { href: `#/models/${encodeURIComponent(model.name)}`, class: "model-link" }, model.name),
        meta?.parameters?.task ? el("span", { class: "tag" }, meta.parameters.task) : null,
        failed ? loadError(model.reason) : null,
      ].filter(Boolean),
    );
    r.cells.state.replaceChildren(stateBadge(model));
    r.cells.versions.textContent = model.versions.join(", ") || "—";
    r.cells.device.textContent = model.state === "READY" ? meta?.parameters?.device ?? "…" : "—";
    r.cells.instances.textContent = model.state === "READY" ? meta?.parameters?.instances ?? "…" : "—";
    const loading = busy.has(model.name);
    const ready = model.state === "READY";
    const actionKey = `${ready}/${loading}`;
    if (r.actionKey === actionKey) return r.tr;
    r.actionKey = actionKey;
    r.cells.action.replaceChildren(
      el(
        "button",
        {
          class: ready ? "ghost" : "primary",
          "data-action": ready ? "unload" : "load",
          disabled: loading,
          onclick: () => act(model, ready ? unloadModel : loadModel),
        },
        loading ? "…" : ready ? "Unload" : "Load",
      ),
    );
    return r.tr;
  }

  async function refresh() {
    try {
      const models = group(await repositoryIndex());
      await Promise.all(
        models
          .filter((m) => m.state === "READY" && !metadata.has(m.name))
          .map(async (m) => {
            try {
              metadata.set(m.name, await modelMetadata(m.name));
            } catch (_) {
              /* unloaded in between: shown as such on the next refresh */
            }
          }),
      );
      if (stopped) return;
      const names = new Set(models.map((m) => m.name));
      for (const name of [...rows.keys()]) if (!names.has(name)) rows.delete(name);
      body.replaceChildren(...models.map(row));
      if (!models.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 10, class: "muted" }, "The repository holds no models.")));
      table.dataset.loaded = "true";
      stats();
      if (status.querySelector(".error.index")) status.replaceChildren();
    } catch (e) {
      const box = errorBox(e, "Listing the repository");
      box.classList.add("index");
      status.replaceChildren(box);
    }
  }

  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  const unsubscribe = sampler.subscribe(stats);
  return () => {
    stopped = true;
    clearInterval(timer);
    unsubscribe();
  };
}
