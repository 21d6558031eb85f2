// The node's /metrics (Prometheus/OpenMetrics text), parsed and sampled
// over time: rates and latency quantiles are differences between samples.

import { metricsText } from "./api.js";

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Every sample of an exposition: [{name, labels, value}]. */
export function parse(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = {};
    for (const [, key, value] of (m[2] || "").matchAll(LABEL)) {
      labels[key] = value.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

const matches = (labels, want) => Object.entries(want).every(([k, v]) => labels[k] === v);

/** Sum of `name` over the samples whose labels include `want`. */
export function total(samples, name, want = {}) {
  let sum = 0;
  for (const s of samples) if (s.name === name && matches(s.labels, want)) sum += s.value;
  return sum;
}

/** Whether any sample of `name` exists. */
export const has = (samples, name) => samples.some((s) => s.name === name);

/** Distinct values of label `key` among the samples of `name`. */
export function labelValues(samples, name, key) {
  return [...new Set(samples.filter((s) => s.name === name && key in s.labels).map((s) => s.labels[key]))].sort();
}

/** Cumulative bucket counts of histogram `base` summed over matching series: [[le, count]], le ascending. */
function buckets(samples, base, want) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== `${base}_bucket` || !matches(s.labels, want)) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
}

/**
 * Quantile q of what histogram `base` observed between samples `before`
 * and `after` (as Prometheus' histogram_quantile: linear within a bucket);
 * null when nothing was observed.
 */
export function quantile(before, after, base, q, want = {}) {
  const old = new Map(buckets(before, base, want));
  const delta = buckets(after, base, want).map(([le, n]) => [le, n - (old.get(le) || 0)]);
  const count = delta.length ? delta[delta.length - 1][1] : 0;
  if (count <= 0) return null;
  const rank = q * count;
  let prevLe = 0;
  let prevN = 0;
  for (const [le, n] of delta) {
    if (n >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevN) / Math.max(n - prevN, 1e-12));
    }
    prevLe = le;
    prevN = n;
  }
  return prevLe;
}

/**
 * Polls /metrics every `everyMs` and keeps the last `keep` snapshots
 * ({t: seconds, samples}); listeners get the sampler after each poll, or
 * the error when the poll failed.
 */
export class Sampler {
  constructor(everyMs = 2000, keep = 150) {
    this.everyMs = everyMs;
    this.keep = keep;
    this.history = [];
    this.listeners = new Set();
    this.timer = null;
    /** Polls answered so far. */
    this.polls = 0;
  }

  subscribe(listener) {
    this.listeners.add(listener);
    if (!this.timer) this.start();
    return () => this.listeners.delete(listener);
  }

  start() {
    const tick = async () => {
      let error = null;
      try {
        const samples = parse(await metricsText());
        this.history.push({ t: Date.now() / 1000, samples });
        this.polls += 1;
        if (this.history.length > this.keep) this.history.shift();
      } catch (e) {
        error = e;
      }
      for (const listener of this.listeners) listener(this, error);
      this.timer = setTimeout(tick, this.everyMs);
    };
    tick();
  }

  /** Latest snapshot, and the one about `windowS` seconds before it (null until two exist). */
  window(windowS = 10) {
    const h = this.history;
    if (h.length < 2) return null;
    const now = h[h.length - 1];
    let then = h[0];
    for (let i = h.length - 2; i >= 0; i--) {
      then = h[i];
      if (now.t - h[i].t >= windowS) break;
    }
    return { now, then, dt: now.t - then.t };
  }

  /** Per-second rate of counter `name` over the window. */
  rate(name, want = {}, windowS = 10) {
    const w = this.window(windowS);
    if (!w || w.dt <= 0) return null;
    return Math.max(0, total(w.now.samples, name, want) - total(w.then.samples, name, want)) / w.dt;
  }

  /** Quantile q (seconds) of histogram `base` over the window. */
  quantile(base, q, want = {}, windowS = 10) {
    const w = this.window(windowS);
    return w ? quantile(w.then.samples, w.now.samples, base, q, want) : null;
  }

  latest() {
    return this.history.length ? this.history[this.history.length - 1].samples : [];
  }
}

/** The console's one sampler. */
export const sampler = new Sampler();
