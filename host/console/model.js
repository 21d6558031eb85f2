// The model view: metadata, the widget for the model's declared task, and a
// try-it form generated from its inputs, with the request and response as
// copyable curl and Python.

import { infer, modelMetadata } from "./api.js";
import { el, errorBox } from "./dom.js";
import { showExchange } from "./snippets.js";
import { widgetFor } from "./widgets.js";

const NUMERIC = /^(FP|INT|UINT|BOOL)/;

function specTable(title, specs) {
  return el(
    "div",
    {},
    el("h3", {}, title),
    el(
      "table",
      { class: "specs" },
      el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Datatype"), el("th", {}, "Shape"))),
      el(
        "tbody",
        {},
        specs.map((s) => el("tr", {}, el("td", {}, el("code", {}, s.name)), el("td", {}, s.datatype), el("td", {}, `[${s.shape.join(", ")}]`))),
      ),
    ),
  );
}

/** Values typed into a field: a JSON array, or numbers split on commas/whitespace, or (BYTES) one text per line. */
function parseData(text, datatype) {
  const trimmed = text.trim();
  if (trimmed.startsWith("[")) return JSON.parse(trimmed).flat(Infinity);
  if (!NUMERIC.test(datatype)) return text.split("\n").filter((line) => line.length);
  if (!trimmed) return [];
  return trimmed.split(/[\s,]+/).map((v) => {
    if (datatype === "BOOL") return v === "true" || v === "1";
    const n = Number(v);
    if (Number.isNaN(n)) throw new Error(`${v} is not a number`);
    return n;
  });
}

/** The declared shape with one -1 resolved from the element count. */
function resolveShape(text, count) {
  const dims = text.split(/[\s,]+/).filter(Boolean).map(Number);
  if (dims.some((d) => !Number.isInteger(d))) throw new Error(`shape "${text}" is not a list of integers`);
  const free = dims.filter((d) => d < 0).length;
  if (free > 1) throw new Error(`shape [${dims}] has more than one -1; give all but one dimension`);
  const known = dims.filter((d) => d >= 0).reduce((a, b) => a * b, 1);
  return dims.map((d) => (d < 0 ? (known ? Math.floor(count / known) : 0) : d));
}

function outputsTable(response) {
  return el(
    "table",
    { class: "specs outputs" },
    el("thead", {}, el("tr", {}, el("th", {}, "Output"), el("th", {}, "Shape"), el("th", {}, "Data"))),
    el(
      "tbody",
      {},
      (response.outputs || []).map((o) => {
        const data = o.data || [];
        const shown = data.slice(0, 32).map((v) => (typeof v === "number" ? +v.toPrecision(6) : v));
        return el(
          "tr",
          { "data-output": o.name, "data-values": JSON.stringify(data.slice(0, 256)) },
          el("td", {}, el("code", {}, o.name), el("div", { class: "muted" }, o.datatype)),
          el("td", {}, `[${o.shape.join(", ")}]`),
          el("td", { class: "data" }, shown.join(", ") + (data.length > 32 ? ` … (${data.length} values)` : "")),
        );
      }),
    ),
  );
}

function defaultData(spec) {
  if (!NUMERIC.test(spec.datatype)) return "Hello from the edgeserve console";
  const fixed = spec.shape.map((d) => (d < 0 ? 1 : d)).reduce((a, b) => a * b, 1);
  return Array.from({ length: Math.min(fixed, 256) }, (_, i) => (fixed <= 8 ? i + 1 : 0)).join(" ");
}

function tryIt(name, meta) {
  const fields = meta.inputs.map((spec) => {
    const numeric = NUMERIC.test(spec.datatype);
    const data = el("textarea", { rows: numeric ? 2 : 3, name: `data-${spec.name}`, "data-input": spec.name, spellcheck: "false" }, defaultData(spec));
    const shape = el("input", { name: `shape-${spec.name}`, "data-shape": spec.name, value: spec.shape.join(", ") });
    return {
      spec,
      data,
      shape,
      node: el(
        "div",
        { class: "field" },
        el("label", {}, el("code", {}, spec.name), el("span", { class: "muted" }, ` ${spec.datatype} · `), "shape ", shape),
        data,
        el("div", { class: "hint" }, numeric ? "Numbers separated by spaces or commas, or a JSON array; a -1 in the shape is filled in from the count." : "One text per line."),
      ),
    };
  });
  const parameters = el("input", { name: "parameters", placeholder: '{"k": 5}', "data-parameters": "" });
  const result = el("div", { class: "result", id: "try-result" });
  const exchange = el("div", { class: "exchange" });
  const path = `/v2/models/${encodeURIComponent(name)}/infer`;

  function body() {
    const request = {
      inputs: fields.map(({ spec, data, shape }) => {
        const values = parseData(data.value, spec.datatype);
        return { name: spec.name, shape: resolveShape(shape.value, values.length), datatype: spec.datatype, data: values };
      }),
    };
    if (parameters.value.trim()) request.parameters = JSON.parse(parameters.value);
    return request;
  }

  const send = el("button", { class: "primary", id: "try-send", type: "submit" }, "Send request");
  const form = el(
    "form",
    {
      class: "try",
      onsubmit: async (event) => {
        event.preventDefault();
        let request;
        try {
          request = body();
        } catch (e) {
          result.replaceChildren(errorBox(e, "The request is not valid"));
          return;
        }
        send.disabled = true;
        result.replaceChildren(el("div", { class: "info" }, "Running…"));
        try {
          const started = performance.now();
          const response = await infer(name, request);
          const ms = performance.now() - started;
          result.replaceChildren(el("div", { class: "muted" }, `${ms.toFixed(1)} ms round trip`), outputsTable(response));
          showExchange(exchange, path, request, response);
        } catch (e) {
          result.replaceChildren(errorBox(e, `${e.status || "Error"}`));
          showExchange(exchange, path, request, { error: e.message });
        } finally {
          send.disabled = false;
        }
      },
    },
    fields.map((f) => f.node),
    el("div", { class: "field" }, el("label", {}, "Parameters ", el("span", { class: "muted" }, "(JSON object, optional)")), parameters),
    el("div", { class: "actions" }, send),
  );
  try {
    showExchange(exchange, path, body());
  } catch (_) {
    /* nothing to show until the form holds a valid request */
  }
  return el("section", { class: "card" }, el("h2", {}, "Try it"), form, result, exchange);
}

export function renderModel(view, name) {
  const header = el(
    "div",
    { class: "crumbs" },
    el("a", { href: "#/models" }, "Models"),
    " / ",
    el("strong", {}, name),
  );
  const holder = el("div", { class: "info" }, "Loading metadata…");
  view.append(header, holder);
  let cleanup = null;
  let stopped = false;
  modelMetadata(name)
    .then((meta) => {
      if (stopped) return;
      const p = meta.parameters || {};
      const facts = el(
        "dl",
        { class: "facts" },
        [
          ["Versions", (meta.versions || []).join(", ")],
          ["Platform", meta.platform],
          ["Device", p.device],
          ["Instances", p.instances],
          ["Task", p.task || "—"],
        ].map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v ?? "—"))),
      );
      const overview = el(
        "section",
        { class: "card", id: "metadata" },
        el("h1", {}, meta.name),
        facts,
        el("div", { class: "two" }, specTable("Inputs", meta.inputs), specTable("Outputs", meta.outputs)),
      );
      const widget = widgetFor(p.task, name, meta);
      holder.replaceWith(overview, widget ? widget.node : "", tryIt(name, meta));
      cleanup = widget?.cleanup || null;
    })
    .catch((e) => holder.replaceWith(errorBox(e, `Model ${name}`)));
  return () => {
    stopped = true;
    if (cleanup) cleanup();
  };
}
