// The metrics view: live charts (uPlot, vendored) from this node's /metrics:
// requests/s by outcome, latency percentiles, in-flight requests, batch
// sizes and GPU memory when the node exports them.

import { bytes, el, errorBox, latency } from "./dom.js";
import { has, labelValues, quantile, sampler, total } from "./prom.js";

const COLORS = ["#2563eb", "#7c3aed", "#0891b2", "#d97706", "#db2777", "#4b5563"];
/** Series whose meaning has a colour. */
const NAMED = { success: "#16a34a", failure: "#dc2626", offloaded: "#d97706" };
const color = (label, i) => NAMED[label] || COLORS[i % COLORS.length];
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const count = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));

/** Pairs of consecutive snapshots of the sampler's history. */
function steps(history) {
  const out = [];
  for (let i = 1; i < history.length; i++) out.push([history[i - 1], history[i]]);
  return out;
}

const rateSeries = (history, name, want) =>
  steps(history).map(([a, b]) => Math.max(0, total(b.samples, name, want) - total(a.samples, name, want)) / Math.max(b.t - a.t, 1e-9));

/** The charts: each derives its series from the history, or says it does not apply. */
const CHARTS = [
  {
    id: "requests",
    title: "Requests/s by outcome",
    format: (v) => v.toFixed(2),
    series(history, latest) {
      const outcomes = labelValues(latest, "edgeserve_requests_total", "outcome");
      return outcomes.map((outcome) => ({ label: outcome, data: rateSeries(history, "edgeserve_requests_total", { outcome }) }));
    },
  },
  {
    id: "latency",
    title: "Compute latency percentiles",
    format: latency,
    series(history) {
      const pairs = steps(history);
      return [0.5, 0.9, 0.99].map((q) => ({
        label: `p${Math.round(q * 100)}`,
        data: pairs.map(([a, b]) => quantile(a.samples, b.samples, "edgeserve_compute_duration_seconds", q)),
      }));
    },
  },
  {
    id: "queue",
    title: "Queue wait p99",
    format: latency,
    series(history) {
      return [{ label: "p99", data: steps(history).map(([a, b]) => quantile(a.samples, b.samples, "edgeserve_queue_duration_seconds", 0.99)) }];
    },
  },
  {
    id: "inflight",
    title: "In-flight requests",
    format: count,
    series(history) {
      return [{ label: "in flight", data: history.slice(1).map((h) => total(h.samples, "edgeserve_inflight_requests")) }];
    },
  },
  {
    id: "batch",
    title: "Mean batch size",
    format: (v) => v.toFixed(2),
    applies: (latest) => batchHistogram(latest) !== null,
    series(history, latest) {
      const base = batchHistogram(latest);
      return [
        {
          label: "batch size",
          data: steps(history).map(([a, b]) => {
            const n = total(b.samples, `${base}_count`) - total(a.samples, `${base}_count`);
            return n > 0 ? (total(b.samples, `${base}_sum`) - total(a.samples, `${base}_sum`)) / n : null;
          }),
        },
      ];
    },
  },
  {
    id: "gpu",
    title: "GPU memory",
    format: bytes,
    applies: (latest) => has(latest, "edgeserve_device_memory_bytes"),
    series(history, latest) {
      return labelValues(latest, "edgeserve_device_memory_bytes", "state").map((state) => ({
        label: state,
        data: history.slice(1).map((h) => total(h.samples, "edgeserve_device_memory_bytes", { state })),
      }));
    },
  },
];

/** The histogram of batch sizes, once the node batches (any `edgeserve_*batch_size*` histogram). */
function batchHistogram(latest) {
  const sample = latest.find((s) => /^edgeserve_.*batch_size.*_count$/.test(s.name));
  return sample ? sample.name.replace(/_count$/, "") : null;
}

function chartCard(spec) {
  const value = el("span", { class: "chart-value" });
  const plotHolder = el("div", { class: "plot" });
  const card = el("section", { class: "card chart", id: `chart-${spec.id}`, "data-points": "0" }, el("div", { class: "card-head" }, el("h3", {}, spec.title), value), plotHolder);
  let plot = null;
  let labels = "";

  function draw(times, series) {
    const key = series.map((s) => s.label).join("|");
    const width = Math.max(plotHolder.clientWidth, 200);
    if (!plot || key !== labels) {
      plot?.destroy();
      labels = key;
      plot = new uPlot(
        {
          width,
          height: 180,
          legend: { show: false },
          cursor: { drag: { x: false, y: false } },
          scales: { x: { time: true }, y: { range: (_, min, max) => [Math.min(0, min ?? 0), max > 0 ? max * 1.15 : 1] } },
          axes: [{ stroke: "#6b7280", grid: { stroke: "#eef0f3" }, space: 90, values: (_, ticks) => ticks.map(clock) }, { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, size: 70, values: (_, ticks) => ticks.map((t) => spec.format(t)) }],
          series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: color(s.label, i), width: 2, spanGaps: false, value: (_, v) => (v == null ? "—" : spec.format(v)) }))],
        },
        [times, ...series.map((s) => s.data)],
        plotHolder,
      );
    } else {
      plot.setData([times, ...series.map((s) => s.data)]);
      if (plot.width !== width) plot.setSize({ width, height: 180 });
    }
    value.replaceChildren(
      ...series.map((s, i) => {
        const v = s.data[s.data.length - 1];
        return el("span", { class: "legend-item" }, el("i", { style: `background:${color(s.label, i)}` }), `${s.label} `, el("b", {}, v === null || v === undefined ? "—" : spec.format(v)));
      }),
    );
    const points = series.reduce((n, s) => n + s.data.filter((v) => v !== null && v > 0).length, 0);
    card.dataset.points = String(points);
  }

  return { card, draw, destroy: () => plot?.destroy() };
}

export function renderMetrics(view) {
  const status = el("div", { class: "status" });
  const grid = el("div", { class: "charts", id: "charts" });
  view.append(
    el("section", { class: "card" }, el("div", { class: "card-head" }, el("h1", {}, "Metrics"), el("span", { class: "muted" }, "From this node's /metrics, every 2 s")), status),
    grid,
  );
  const cards = new Map();

  function update(s, error) {
    status.replaceChildren(error ? errorBox(error, "Reading /metrics") : "");
    const history = s.history;
    const latest = s.latest();
    if (history.length < 2) {
      status.append(el("div", { class: "muted" }, "Collecting samples…"));
      return;
    }
    grid.dataset.samples = String(s.polls);
    const times = history.slice(1).map((h) => h.t);
    for (const spec of CHARTS) {
      if (spec.applies && !spec.applies(latest)) continue;
      let chart = cards.get(spec.id);
      if (!chart) {
        chart = chartCard(spec);
        cards.set(spec.id, chart);
        grid.append(chart.card);
      }
      const series = spec.series(history, latest);
      if (series.length) chart.draw(times, series);
    }
  }

  const unsubscribe = sampler.subscribe(update);
  if (sampler.history.length) update(sampler, null);
  return () => {
    unsubscribe();
    for (const chart of cards.values()) chart.destroy();
  };
}
