// Widgets for models that declare a task (config.toml `task`, surfaced as
// metadata `parameters.task`): embeddings, recommender, text generation;
// digits lives in digits.js.

import { infer, request } from "./api.js";
import { el, errorBox } from "./dom.js";
import { digitsWidget } from "./digits.js";
import { showExchange } from "./snippets.js";

/** The widget for `task`, or null when the console has none for it. */
export function widgetFor(task, name, meta) {
  switch (task) {
    case "digits":
      return digitsWidget(name, meta);
    case "embeddings":
      return embeddingsWidget(name, meta);
    case "recommender":
      return recommenderWidget(name, meta);
    case "text-generation":
      return generationWidget(name, meta);
    default:
      return null;
  }
}

const inferPath = (name) => `/v2/models/${encodeURIComponent(name)}/infer`;

/** Cosine similarity of every pair of the rows of `data` ([n, dim], row-major). */
export function cosineMatrix(data, n) {
  const dim = data.length / n;
  const rows = Array.from({ length: n }, (_, i) => data.slice(i * dim, (i + 1) * dim));
  const norms = rows.map((r) => Math.hypot(...r) || 1);
  return rows.map((a, i) => rows.map((b, j) => a.reduce((s, v, k) => s + v * b[k], 0) / (norms[i] * norms[j])));
}

function heatmap(sentences, matrix) {
  const n = sentences.length;
  const cells = [el("div", { class: "hm-corner" })];
  sentences.forEach((s, j) => cells.push(el("div", { class: "hm-col", title: s }, `#${j + 1}`)));
  matrix.forEach((row, i) => {
    cells.push(el("div", { class: "hm-row", title: sentences[i] }, `#${i + 1} ${sentences[i]}`));
    row.forEach((v, j) =>
      cells.push(
        el(
          "div",
          { class: v > 0.55 ? "hm-cell dark" : "hm-cell", style: `--v:${Math.max(0, v).toFixed(3)}`, "data-i": i, "data-j": j, "data-v": v.toFixed(6), title: `${sentences[i]}\n${sentences[j]}\ncos = ${v.toFixed(4)}` },
          v.toFixed(2),
        ),
      ),
    );
  });
  return el("div", { class: "heatmap", style: `--n:${n}`, id: "heatmap", "data-matrix": JSON.stringify(matrix) }, cells);
}

function embeddingsWidget(name) {
  const text = el(
    "textarea",
    { rows: 5, id: "sentences", spellcheck: "false" },
    "A man is playing a guitar.\nSomeone plays an instrument.\nThe stock market fell sharply today.\nShares dropped at the close of trading.",
  );
  const result = el("div", { id: "embeddings-result" });
  const exchange = el("div", { class: "exchange" });
  const run = el("button", { class: "primary", id: "embed-run", type: "submit" }, "Compare");
  const form = el(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        const sentences = text.value.split("\n").map((s) => s.trim()).filter(Boolean);
        if (!sentences.length) {
          result.replaceChildren(errorBox(new Error("enter at least one sentence, one per line")));
          return;
        }
        const body = { inputs: [{ name: "text", shape: [sentences.length], datatype: "BYTES", data: sentences }], outputs: [{ name: "embedding" }] };
        run.disabled = true;
        result.replaceChildren(el("div", { class: "info" }, "Embedding…"));
        try {
          const response = await infer(name, body);
          const embedding = response.outputs.find((o) => o.name === "embedding");
          result.replaceChildren(
            el("div", { class: "muted small" }, `Cosine similarity of the ${embedding.shape[1]}-dimensional embeddings`),
            heatmap(sentences, cosineMatrix(embedding.data, sentences.length)),
          );
          const shown = { ...response, outputs: response.outputs.map((o) => ({ ...o, data: [...o.data.slice(0, 8), `… ${o.data.length} values`] })) };
          showExchange(exchange, inferPath(name), body, shown);
        } catch (e) {
          result.replaceChildren(errorBox(e, "Embedding"));
        } finally {
          run.disabled = false;
        }
      },
    },
    el("label", { class: "muted small" }, "Sentences, one per line"),
    text,
    el("div", { class: "actions" }, run),
  );
  return { node: el("section", { class: "card widget", id: "embeddings-widget" }, el("h2", {}, "Sentence similarity"), form, result, exchange) };
}

function recommenderWidget(name) {
  const user = el("input", { type: "number", min: 0, value: 42, id: "user-id" });
  const k = el("input", { type: "number", min: 1, max: 500, value: 10, id: "rec-k" });
  const result = el("div", { id: "recommender-result" });
  const exchange = el("div", { class: "exchange" });
  const form = el(
    "form",
    {
      class: "inline",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { inputs: [{ name: "user_id", shape: [1], datatype: "INT64", data: [Number(user.value)] }], parameters: { k: Number(k.value) } };
        try {
          const response = await infer(name, body);
          const items = response.outputs.find((o) => o.name === "items").data;
          const scores = response.outputs.find((o) => o.name === "scores").data;
          const best = Math.max(...scores.map(Math.abs), 1e-9);
          result.replaceChildren(
            el(
              "table",
              { class: "specs ranked" },
              el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Item"), el("th", {}, "Score"), el("th", {}, ""))),
              el(
                "tbody",
                {},
                items.map((item, i) =>
                  el(
                    "tr",
                    { "data-item": item },
                    el("td", {}, i + 1),
                    el("td", {}, el("code", {}, `item ${item}`)),
                    el("td", {}, scores[i].toFixed(4)),
                    el("td", { class: "wide" }, el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: `width:${((Math.abs(scores[i]) / best) * 100).toFixed(1)}%` }))),
                  ),
                ),
              ),
            ),
          );
          showExchange(exchange, inferPath(name), body, response);
        } catch (e) {
          result.replaceChildren(errorBox(e, "Recommending"));
        }
      },
    },
    el("label", {}, "User id ", user),
    el("label", {}, "Items ", k),
    el("button", { class: "primary", id: "rec-run", type: "submit" }, "Recommend"),
  );
  return { node: el("section", { class: "card widget", id: "recommender-widget" }, el("h2", {}, "Recommendations"), form, result, exchange) };
}

/** Text chunks of a server-sent event stream (`data: {...}` lines), as they arrive. */
async function* sse(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || chunk.error);
      yield chunk.text_output ?? chunk.choices?.[0]?.text ?? "";
    }
  }
}

function generationWidget(name) {
  const prompt = el("textarea", { rows: 3, id: "prompt" }, "Alice was beginning to get very tired");
  const number = (id, value, attrs) => el("input", { type: "number", id, value, ...attrs });
  const controls = {
    max_tokens: number("max-tokens", 32, { min: 1, max: 512 }),
    temperature: number("temperature", 0.8, { min: 0, max: 2, step: 0.05 }),
    top_k: number("top-k", 40, { min: 0 }),
    top_p: number("top-p", 0.95, { min: 0, max: 1, step: 0.01 }),
    seed: number("seed", "", { placeholder: "random" }),
  };
  const output = el("div", { class: "generated", id: "generated" });
  const note = el("div", { class: "muted small" });
  const exchange = el("div", { class: "exchange" });
  const run = el("button", { class: "primary", id: "generate-run", type: "submit" }, "Generate");

  function parameters() {
    const p = {};
    for (const [key, input] of Object.entries(controls)) if (input.value !== "") p[key] = Number(input.value);
    return p;
  }

  async function generate(event) {
    event.preventDefault();
    const text = prompt.value;
    const params = parameters();
    output.replaceChildren(el("span", { class: "prompt-echo" }, text));
    const generated = el("span", { class: "completion" });
    output.append(generated, el("span", { class: "cursor" }));
    output.dataset.steps = "0";
    run.disabled = true;
    const streamPath = `/v2/models/${encodeURIComponent(name)}/generate_stream`;
    const streamBody = { text_input: text, parameters: params };
    try {
      let streamed = false;
      try {
        const response = await request(streamPath, { method: "POST", body: JSON.stringify(streamBody), headers: { "content-type": "application/json", accept: "text/event-stream" } });
        streamed = true;
        note.textContent = "Streamed token by token from the generate extension.";
        for await (const piece of sse(response)) {
          if (!piece) continue;
          generated.append(piece);
          output.dataset.steps = String(Number(output.dataset.steps) + 1);
        }
        showExchange(exchange, streamPath, streamBody);
      } catch (e) {
        if (streamed || (e.status !== 404 && e.status !== 405)) throw e;
      }
      if (!streamed) {
        // This node has no token streaming: one request, the whole continuation at once.
        note.textContent = "This node does not stream tokens; the continuation arrives at once.";
        const body = { inputs: [{ name: "text", shape: [1], datatype: "BYTES", data: [text] }], parameters: params, outputs: [{ name: "text" }] };
        const response = await infer(name, body);
        generated.append(response.outputs.find((o) => o.name === "text").data[0]);
        output.dataset.steps = "1";
        showExchange(exchange, inferPath(name), body, response);
      }
    } catch (e) {
      output.append(errorBox(e, "Generating"));
    } finally {
      output.querySelector(".cursor")?.remove();
      output.dataset.done = "true";
      run.disabled = false;
    }
  }

  const form = el(
    "form",
    { onsubmit: generate },
    prompt,
    el(
      "div",
      { class: "controls" },
      Object.entries(controls).map(([key, input]) => el("label", {}, key.replace("_", " "), input)),
      run,
    ),
  );
  return { node: el("section", { class: "card widget", id: "generation-widget" }, el("h2", {}, "Text generation"), form, output, note, exchange) };
}
