// The digits widget: draw a digit, downsample it the way scikit-learn's
// digits data set was made (a 32×32 bitmap, the digit scaled to fill it,
// counted in 4×4 blocks: an 8×8 image of 0..16), classify it.

import { infer } from "./api.js";
import { el, errorBox } from "./dom.js";
import { showExchange } from "./snippets.js";

const SIZE = 240;
const BITMAP = 32;
const BLOCK = 4;

/** The drawing's ink (alpha > 0) as an 8×8 array of 0..16 block counts, or null when blank. */
export function downsample(canvas) {
  const { width, height } = canvas;
  const ink = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (ink[(y * width + x) * 4 + 3] > 0) {
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null;
  // The digit's longer side fills the 32×32 bitmap, centred, aspect kept.
  const w = x1 - x0 + 1;
  const h = y1 - y0 + 1;
  const scale = BITMAP / Math.max(w, h);
  const bitmap = document.createElement("canvas");
  bitmap.width = bitmap.height = BITMAP;
  const ctx = bitmap.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  const dw = w * scale;
  const dh = h * scale;
  ctx.drawImage(canvas, x0, y0, w, h, (BITMAP - dw) / 2, (BITMAP - dh) / 2, dw, dh);
  const bits = ctx.getImageData(0, 0, BITMAP, BITMAP).data;
  const pixels = new Array(64).fill(0);
  for (let y = 0; y < BITMAP; y++) {
    for (let x = 0; x < BITMAP; x++) {
      if (bits[(y * BITMAP + x) * 4 + 3] >= 128) pixels[Math.floor(y / BLOCK) * 8 + Math.floor(x / BLOCK)] += 1;
    }
  }
  return pixels;
}

function preview(pixels) {
  return el(
    "div",
    { class: "pixels", "aria-label": "8×8 input" },
    pixels.map((v) => el("span", { style: `--ink:${v / 16}`, title: String(v) })),
  );
}

/** Class probabilities as horizontal bars, the top class highlighted. */
export function barChart(probabilities, labels) {
  const top = probabilities.indexOf(Math.max(...probabilities));
  return el(
    "div",
    { class: "bars", "data-top": String(labels[top]) },
    probabilities.map((p, i) =>
      el(
        "div",
        { class: `bar-row${i === top ? " top" : ""}`, "data-class": String(labels[i]), "data-p": String(p) },
        el("span", { class: "bar-label" }, labels[i]),
        el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: `width:${(p * 100).toFixed(2)}%` })),
        el("span", { class: "bar-value" }, `${(p * 100).toFixed(1)}%`),
      ),
    ),
  );
}

export function digitsWidget(name) {
  const canvas = el("canvas", { width: SIZE, height: SIZE, class: "draw", id: "digit-canvas", "aria-label": "Draw a digit" });
  const ctx = canvas.getContext("2d");
  const pixelsView = el("div", { class: "pixels-holder" }, preview(new Array(64).fill(0)));
  const result = el("div", { class: "digit-result", id: "digit-result" }, el("div", { class: "muted" }, "Draw a digit 0–9 in the box."));
  const exchange = el("div", { class: "exchange" });
  let drawing = false;
  let generation = 0;

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return [((event.clientX - box.left) * SIZE) / box.width, ((event.clientY - box.top) * SIZE) / box.height];
  }

  async function classify() {
    const pixels = downsample(canvas);
    if (!pixels) return;
    const mine = ++generation;
    pixelsView.replaceChildren(preview(pixels));
    const request = { inputs: [{ name: "pixels", shape: [1, 64], datatype: "FP32", data: pixels }] };
    try {
      const response = await infer(name, request);
      if (mine !== generation) return;
      const probabilities = response.outputs.find((o) => o.name === "probabilities").data;
      const label = response.outputs.find((o) => o.name === "label")?.data[0];
      result.replaceChildren(
        el("div", { class: "prediction" }, "Prediction ", el("strong", { id: "digit-label" }, label)),
        barChart(probabilities, probabilities.map((_, i) => i)),
      );
      result.dataset.pixels = JSON.stringify(pixels);
      result.dataset.label = String(label);
      showExchange(exchange, `/v2/models/${encodeURIComponent(name)}/infer`, request, response);
    } catch (e) {
      result.replaceChildren(errorBox(e, "Classifying"));
    }
  }

  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    const [x, y] = point(event);
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(x + 0.01, y);
    ctx.stroke();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const [x, y] = point(event);
    ctx.lineTo(x, y);
    ctx.stroke();
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    classify();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);

  function clear() {
    generation++;
    ctx.clearRect(0, 0, SIZE, SIZE);
    ctx.lineWidth = 22;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.strokeStyle = "#111827";
    pixelsView.replaceChildren(preview(new Array(64).fill(0)));
    result.replaceChildren(el("div", { class: "muted" }, "Draw a digit 0–9 in the box."));
    delete result.dataset.label;
    delete result.dataset.pixels;
  }
  clear();

  const node = el(
    "section",
    { class: "card widget", id: "digits-widget" },
    el("h2", {}, "Draw a digit"),
    el(
      "div",
      { class: "digits" },
      el("div", { class: "draw-holder" }, canvas, el("div", { class: "actions" }, el("button", { class: "ghost", id: "digit-clear", type: "button", onclick: clear }, "Clear"))),
      el("div", {}, el("div", { class: "muted small" }, "What the model sees (8×8, 0–16)"), pixelsView),
      result,
    ),
    exchange,
  );
  return { node };
}
