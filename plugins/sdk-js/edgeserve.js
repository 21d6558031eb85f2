// edgeserve's JavaScript SDK: write a model handler whose math runs on host
// kernels. One ES module; `edgeserve build` compiles it with the handler by
// componentize-js. Its version follows the contract: edgeserve:handler@0.1.5.
//
//   import { Model, spec, exportHandler } from "./sdk/edgeserve.js";
//   class Double extends Model {
//     static inputs = [spec("x", "FP32", [-1])];
//     static outputs = [spec("y", "FP32", [-1])];
//     infer(request) { return { y: request.numeric("x").mul(2).add(1) }; }
//   }
//   export const handler = exportHandler(Double);

import * as wit from "edgeserve:handler/tensor@0.1.5";
import * as witModel from "edgeserve:handler/model@0.1.5";

/** The WIT package version this SDK binds to. */
export const CONTRACT = "edgeserve:handler@0.1.5";

const ARRAYS = { f32: Float32Array, i32: Int32Array, i64: BigInt64Array, u8: Uint8Array };

/** The host refused an operation: bad shapes, dtypes or arguments. */
export class TensorError extends Error {
  constructor(kind, detail) {
    super(`${kind}: ${detail}`);
    this.kind = kind;
    this.detail = detail;
  }
}

/** Runs a host operation, turning the contract's error into TensorError. */
function call(op, ...args) {
  try {
    return op(...args);
  } catch (err) {
    const payload = err && err.payload;
    if (payload && typeof payload.tag === "string") throw new TensorError(payload.tag, payload.val);
    throw err;
  }
}

const wrap = (op, ...args) => new Tensor(call(op, ...args));
const handleOf = (t) => (t ? t.handle : undefined);
/** A [height, width] pair from a pair or one number for both. */
const pair = (v) => (typeof v === "number" ? [v, v] : [v[0], v[1]]);

/**
 * An n-dimensional array held by the host. Methods run on the host:
 * `add/sub/mul/div` take a tensor (broadcast like NumPy) or a number (one
 * `affine` pass); `matmul` is the matrix product.
 */
export class Tensor {
  constructor(handle) {
    this.handle = handle;
  }

  /** A tensor of `dtype` holding `values` (a typed array or numbers), 1-D when `shape` is omitted. */
  static from(values, shape, dtype = "f32") {
    const data = values instanceof ARRAYS[dtype] ? values : ARRAYS[dtype].from(values);
    return Tensor.fromBytes(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), shape ?? [data.length], dtype);
  }

  /** A tensor from little-endian element bytes. */
  static fromBytes(bytes, shape, dtype = "f32") {
    return wrap(wit.Tensor.fromBytes, dtype, shape, bytes);
  }

  /** A tensor of `shape` with every element `value`. */
  static full(shape, value, dtype = "f32") {
    return wrap(wit.Tensor.full, dtype, shape, value);
  }

  /** Dimensions, outermost first. */
  get shape() {
    return Array.from(this.handle.shape());
  }

  /** The element type ("f32", "f16", "i32", "i64", "u8"). */
  get dtype() {
    return this.handle.dtype();
  }

  /** The elements as little-endian bytes (the only copy out of the host). */
  bytes() {
    return call(() => this.handle.read());
  }

  /** The elements as a typed array (Float32Array for f32, BigInt64Array for i64, …). */
  array() {
    const bytes = this.bytes();
    const copy = bytes.slice();
    const Array_ = ARRAYS[this.dtype];
    return new Array_(copy.buffer, copy.byteOffset, copy.byteLength / Array_.BYTES_PER_ELEMENT);
  }

  matmul(other, transposeB = false) { return wrap(wit.matmul, this.handle, other.handle, transposeB); }
  /** `activation(this · weight + bias)` in one host pass. */
  linear(weight, bias, { transposeB = false, activation } = {}) {
    return wrap(wit.linear, this.handle, weight.handle, transposeB, handleOf(bias), activation);
  }
  binary(op, other) { return wrap(wit.binary, op, this.handle, other.handle); }
  unary(op) { return wrap(wit.unary, op, this.handle); }
  /** `this * factor + offset` in one pass. */
  affine(factor, offset) { return wrap(wit.affine, this.handle, factor, offset); }
  softmax(axis = -1) { return wrap(wit.softmax, this.handle, axis); }
  layerNorm(gamma, beta, eps = 1e-5) { return wrap(wit.layerNorm, this.handle, handleOf(gamma), handleOf(beta), eps); }
  reshape(shape) { return wrap(wit.reshape, this.handle, shape); }
  transpose(perm) { return wrap(wit.transpose, this.handle, perm); }
  slice(axis, start, end) { return wrap(wit.slice, this.handle, axis, start, end); }
  reduce(op, axis = -1, keepDims = false) { return wrap(wit.reduce, op, this.handle, axis, keepDims); }
  sum(axis = -1, keepDims = false) { return this.reduce("sum", axis, keepDims); }
  mean(axis = -1, keepDims = false) { return this.reduce("mean", axis, keepDims); }
  argmax(axis = -1, keepDims = false) { return this.reduce("argmax", axis, keepDims); }
  cast(to) { return wrap(wit.cast, this.handle, to); }
  embedding(ids) { return wrap(wit.embedding, this.handle, ids.handle); }
  topK(k) {
    const [values, indices] = call(wit.topK, this.handle, k);
    return [new Tensor(values), new Tensor(indices)];
  }
  /** `this op other` (broadcasting) as a u8 mask: 1 where it holds. */
  compare(op, other) { return wrap(wit.compare, op, this.handle, other.handle); }
  eq(other) { return this.compare("equal", other); }
  lt(other) { return this.compare("less", other); }
  gt(other) { return this.compare("greater", other); }
  /** Entries picked along `axis` by integer `indices` (negative ones count from the end). */
  gather(indices, axis = 0) { return wrap(wit.gather, this.handle, indices.handle, axis); }
  /** Broadcast with `shape` (NumPy rules, both ways). */
  expand(shape) { return wrap(wit.expand, this.handle, shape); }
  /** `min(max(this, lo), hi)`; an omitted bound does not clip. */
  clip(lo, hi) { return wrap(wit.clip, this.handle, lo, hi); }
  /**
   * 2-D convolution of this (`[n, c, h, w]`) with `weight` (`[o, c / groups, kh, kw]`) plus an
   * optional `bias` (`[o]`); pairs are [height, width] (a number means both). `padding` adds zeros
   * before each axis, and after it unless `paddingEnd` says otherwise; each output is clipped to
   * `clip` = [lo, hi] as it is written, an absent bound not clipping (ReLU: [0]; ReLU6: [0, 6]).
   * Uneven padding or a clip is the contract's `conv2d-fused`.
   */
  conv2d(weight, bias, { stride = 1, padding = 0, paddingEnd, dilation = 1, groups = 1, clip = [] } = {}) {
    const [s, p, d] = [pair(stride), pair(padding), pair(dilation)];
    const end = paddingEnd === undefined ? p : pair(paddingEnd);
    const [clipLo, clipHi] = clip;
    if (end[0] !== p[0] || end[1] !== p[1] || clipLo !== undefined || clipHi !== undefined) {
      const options = { stride: s, paddingBegin: p, paddingEnd: end, dilation: d, groups, clipLo, clipHi };
      return wrap(wit.conv2dFused, this.handle, weight.handle, handleOf(bias), options);
    }
    return wrap(wit.conv2d, this.handle, weight.handle, handleOf(bias), s, p, d, groups);
  }
  /** 2-D pooling over `[n, c, h, w]` ("max", or "avg" leaving padding out of the count); `stride` defaults to `kernel`. */
  pool2d(kind, kernel, stride = kernel, padding = 0) {
    return wrap(wit.pool2d, kind, this.handle, pair(kernel), pair(stride), pair(padding));
  }
  maxPool2d(kernel, stride = kernel, padding = 0) { return this.pool2d("max", kernel, stride, padding); }
  avgPool2d(kernel, stride = kernel, padding = 0) { return this.pool2d("avg", kernel, stride, padding); }
  relu() { return this.unary("relu"); }
  gelu() { return this.unary("gelu"); }
  exp() { return this.unary("exp"); }
  tanh() { return this.unary("tanh"); }
  sigmoid() { return this.unary("sigmoid"); }
  neg() { return this.unary("neg"); }

  add(other) { return typeof other === "number" ? this.affine(1, other) : this.binary("add", other); }
  sub(other) { return typeof other === "number" ? this.affine(1, -other) : this.binary("sub", other); }
  mul(other) { return typeof other === "number" ? this.affine(other, 0) : this.binary("mul", other); }
  div(other) { return typeof other === "number" ? this.affine(1 / other, 0) : this.binary("div", other); }
}

/** Tensors joined along `axis`. */
export function concat(tensors, axis = 0) {
  return wrap(wit.concat, tensors.map((t) => t.handle), axis);
}

/** `a` where `condition` is nonzero, `b` elsewhere (the three broadcast). */
export function where(condition, a, b) {
  return wrap(wit.where, condition.handle, a.handle, b.handle);
}

/** Scaled dot-product attention on the host. */
export function attention(q, k, v, { mask, scale, causal = false } = {}) {
  return wrap(wit.attention, q.handle, k.handle, v.handle, handleOf(mask), scale, causal);
}

/**
 * Self-attention over sequences packed without padding: q, k `[total, heads, d]`,
 * v `[total, heads, dv]`, sequence `i` being tokens `offsets[i]` to `offsets[i + 1]`.
 */
export function attentionVarlen(q, k, v, offsets, { scale, causal = false } = {}) {
  return wrap(wit.attentionVarlen, q.handle, k.handle, v.handle, Uint32Array.from(offsets), scale, causal);
}

/**
 * An LSTM layer over a whole sequence in one host call (contract 0.1.5): ONNX's `LSTM` for one
 * direction, without peepholes or clipping. `xGates` `[steps, batch, 4 * hidden]` is the input's
 * product with every gate's weights plus the biases (one `linear` over all steps); `r`
 * `[4 * hidden, hidden]`; `h0`, `c0` `[batch, hidden]`; gates in ONNX's i, o, f, g order, the last
 * step first when `reverse`. Returns [y, h, c]: every step's h as `[steps, batch, hidden]` in time
 * order, and the last step's h and c `[batch, hidden]`.
 */
export function lstm(xGates, r, h0, c0, { reverse = false } = {}) {
  const [y, h, c] = call(wit.lstm, xGates.handle, r.handle, h0.handle, c0.handle, reverse);
  return [new Tensor(y), new Tensor(h), new Tensor(c)];
}

/** What the host knows about the model this instance serves. */
export const model = {
  /** A weight from the model's safetensors file (a shared handle, not a copy). */
  weight: (name) => wrap(witModel.weight, name),
  /** Names of every weight the model ships. */
  weightNames: () => witModel.weightNames(),
  /** A `[parameters]` entry of the model's config.toml, or `fallback`. */
  parameter: (key, fallback) => witModel.parameter(key) ?? fallback,
  /** A small file shipped next to the model, by file name (a Uint8Array), or undefined. */
  asset: (name) => witModel.asset(name),
};

/** Layers built from the model's weights, mirroring the Rust SDK's `nn`. */
export const nn = {
  /**
   * `activation(x · Wᵀ + b)` with `{prefix}.weight`, `{prefix}.bias`;
   * `layout: "outIn"` reads W as PyTorch's nn.Linear ([out, in]), `"inOut"` as x · W.
   */
  linear(prefix, { layout = "outIn", activation } = {}) {
    const name = (leaf) => (prefix ? `${prefix}.${leaf}` : leaf);
    const weight = model.weight(name("weight"));
    const bias = model.weight(name("bias"));
    const [rows, cols] = weight.shape;
    const out = layout === "outIn" ? rows : cols;
    if (bias.shape.length !== 1 || bias.shape[0] !== out) {
      throw new TensorError("shape", `${name("bias")} is [${bias.shape}], not [${out}] for ${name("weight")} [${rows}, ${cols}] as ${layout}`);
    }
    const transposeB = layout === "outIn";
    return (x) => x.linear(weight, bias, { transposeB, activation });
  },
};

/** Throw from `infer` to refuse a request: the client gets a 400 with the message. */
export class InvalidInput extends Error {}

/** One input or output declaration (OIP datatype, -1 for any size). */
export function spec(name, datatype, shape) {
  return { name, datatype, shape: BigInt64Array.from(shape, (d) => BigInt(d)) };
}

/** A BYTES output; string elements are UTF-8 encoded. */
export function bytesOutput(shape, elements) {
  const encoder = new TextEncoder();
  return { bytes: { shape, elements: elements.map((e) => (typeof e === "string" ? encoder.encode(e) : e)) } };
}

/** One inference call: inputs by name, request parameters, wanted outputs. */
export class Request {
  constructor(raw) {
    this.inputs = new Map(raw.inputs.map((named) => [named.name, named.data]));
    this.parameters = new Map(raw.parameters.map(([key, value]) => [key, value.val]));
    /** The outputs the client asked for, or undefined for all. */
    this.requestedOutputs = raw.outputs ?? undefined;
  }

  /** The numeric input `name`; a 400 when it is missing or BYTES. */
  numeric(name) {
    const data = this.input(name);
    if (data.tag !== "numeric") throw new InvalidInput(`input '${name}' must be numeric, not BYTES`);
    return new Tensor(data.val);
  }

  /** The elements of BYTES input `name` (Uint8Arrays), row-major. */
  bytes(name) {
    const data = this.input(name);
    if (data.tag !== "bytes") throw new InvalidInput(`input '${name}' must be BYTES`);
    return data.val.elements;
  }

  /** The elements of BYTES input `name` as text. */
  strings(name) {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    return this.bytes(name).map((element) => decoder.decode(element));
  }

  /** Request parameter `key` (OIP `parameters`), or `fallback`. */
  parameter(key, fallback) {
    return this.parameters.has(key) ? this.parameters.get(key) : fallback;
  }

  /** Whether output `name` is asked for (all are when none are named). */
  wants(name) {
    return this.requestedOutputs === undefined || this.requestedOutputs.includes(name);
  }

  input(name) {
    const data = this.inputs.get(name);
    if (data === undefined) throw new InvalidInput(`missing input '${name}'`);
    return data;
  }
}

/**
 * Base class of a handler: set `static inputs`/`static outputs` (lists of
 * `spec`), load weights in the constructor (once per instance) and compute
 * in `infer(request)`, which returns `{ name: Tensor | bytesOutput(...) }`.
 */
export class Model {
  static inputs = [];
  static outputs = [];
  infer(_request) {
    throw new Error("infer is not implemented");
  }
}

function named(name, value) {
  if (value instanceof Tensor) return { name, data: { tag: "numeric", val: value.handle } };
  if (value && value.bytes) return { name, data: { tag: "bytes", val: value.bytes } };
  throw new TypeError(`output '${name}' is not a Tensor or bytesOutput`);
}

/** The error's one-line message, its stack logged to stderr (the host log, tagged with the model). */
function failure(err) {
  console.error(err && err.stack ? err.stack : String(err));
  return `${err && err.name ? err.name : "Error"}: ${err && err.message !== undefined ? err.message : String(err)}`;
}

/**
 * The contract's `handler` export for `ModelClass`: `export const handler =
 * exportHandler(MyModel)`. InvalidInput is a 400; any other error a 500
 * whose message names it, with its stack in the server log.
 */
export function exportHandler(ModelClass) {
  let instance;
  return {
    metadata() {
      return { inputs: ModelClass.inputs, outputs: ModelClass.outputs };
    },
    init() {
      try {
        instance = new ModelClass();
      } catch (err) {
        throw `init failed: ${failure(err)}`;
      }
    },
    infer(request) {
      try {
        const outputs = instance.infer(new Request(request));
        return Object.entries(outputs).map(([name, value]) => named(name, value));
      } catch (err) {
        if (err instanceof InvalidInput) throw { tag: "invalid-input", val: err.message };
        throw { tag: "internal", val: failure(err) };
      }
    },
  };
}
