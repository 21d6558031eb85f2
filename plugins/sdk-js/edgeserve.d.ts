// TypeScript types of edgeserve.js. What crosses the contract
// (edgeserve:handler@0.1.5, wit/edgeserve.wit) is typed by ./types, which
// jco generates from the WIT (generate-types.mjs; the tests fail when it is
// stale): enums are the WIT's kebab-case names, lists of s64 are bigint.
/// <reference path="./types/model-handler.d.ts" />
import type * as wit from "edgeserve:handler/tensor@0.1.5";
import type * as witTypes from "edgeserve:handler/types@0.1.5";

export const CONTRACT: "edgeserve:handler@0.1.5";

/** `tensor.dtype` */
export type DType = wit.Dtype;
/** `tensor.binary-op` */
export type BinaryOp = wit.BinaryOp;
/** `tensor.unary-op` */
export type UnaryOp = wit.UnaryOp;
/** `tensor.reduce-op` */
export type ReduceOp = wit.ReduceOp;
/** `tensor.compare-op` */
export type CompareOp = wit.CompareOp;
/** `tensor.pool-kind` */
export type PoolKind = wit.PoolKind;
/** A [height, width] pair, or one number for both. */
export type Pair = number | [number, number];
type TypedArray = Float32Array | Int32Array | BigInt64Array | Uint8Array;

export class TensorError extends Error {
  /** The `tensor.error` case. */
  kind: wit.Error["tag"];
  detail: string;
}

export class Tensor {
  static from(values: TypedArray | number[], shape?: number[], dtype?: DType): Tensor;
  static fromBytes(bytes: Uint8Array, shape: number[], dtype?: DType): Tensor;
  static full(shape: number[], value: number, dtype?: DType): Tensor;
  readonly shape: number[];
  readonly dtype: DType;
  bytes(): Uint8Array;
  array(): TypedArray;
  matmul(other: Tensor, transposeB?: boolean): Tensor;
  linear(weight: Tensor, bias?: Tensor, options?: { transposeB?: boolean; activation?: UnaryOp }): Tensor;
  binary(op: BinaryOp, other: Tensor): Tensor;
  unary(op: UnaryOp): Tensor;
  affine(factor: number, offset: number): Tensor;
  softmax(axis?: number): Tensor;
  layerNorm(gamma?: Tensor, beta?: Tensor, eps?: number): Tensor;
  reshape(shape: number[]): Tensor;
  transpose(perm: number[]): Tensor;
  slice(axis: number, start: number, end: number): Tensor;
  reduce(op: ReduceOp, axis?: number, keepDims?: boolean): Tensor;
  sum(axis?: number, keepDims?: boolean): Tensor;
  mean(axis?: number, keepDims?: boolean): Tensor;
  argmax(axis?: number, keepDims?: boolean): Tensor;
  cast(to: DType): Tensor;
  embedding(ids: Tensor): Tensor;
  topK(k: number): [Tensor, Tensor];
  compare(op: CompareOp, other: Tensor): Tensor;
  eq(other: Tensor): Tensor;
  lt(other: Tensor): Tensor;
  gt(other: Tensor): Tensor;
  gather(indices: Tensor, axis?: number): Tensor;
  expand(shape: number[]): Tensor;
  clip(lo?: number, hi?: number): Tensor;
  conv2d(
    weight: Tensor,
    bias?: Tensor,
    options?: { stride?: Pair; padding?: Pair; paddingEnd?: Pair; dilation?: Pair; groups?: number; clip?: [number?, number?] },
  ): Tensor;
  pool2d(kind: PoolKind, kernel: Pair, stride?: Pair, padding?: Pair): Tensor;
  maxPool2d(kernel: Pair, stride?: Pair, padding?: Pair): Tensor;
  avgPool2d(kernel: Pair, stride?: Pair, padding?: Pair): Tensor;
  relu(): Tensor;
  gelu(): Tensor;
  exp(): Tensor;
  tanh(): Tensor;
  sigmoid(): Tensor;
  neg(): Tensor;
  add(other: Tensor | number): Tensor;
  sub(other: Tensor | number): Tensor;
  mul(other: Tensor | number): Tensor;
  div(other: Tensor | number): Tensor;
}

export function concat(tensors: Tensor[], axis?: number): Tensor;
export function where(condition: Tensor, a: Tensor, b: Tensor): Tensor;
export function attention(q: Tensor, k: Tensor, v: Tensor, options?: { mask?: Tensor; scale?: number; causal?: boolean }): Tensor;
export function attentionVarlen(q: Tensor, k: Tensor, v: Tensor, offsets: ArrayLike<number>, options?: { scale?: number; causal?: boolean }): Tensor;
export function lstm(xGates: Tensor, r: Tensor, h0: Tensor, c0: Tensor, options?: { reverse?: boolean }): [Tensor, Tensor, Tensor];

export const model: {
  weight(name: string): Tensor;
  weightNames(): string[];
  parameter(key: string, fallback?: string): string | undefined;
  asset(name: string): Uint8Array | undefined;
};

export const nn: {
  linear(prefix: string, options?: { layout?: "outIn" | "inOut"; activation?: UnaryOp }): (x: Tensor) => Tensor;
};

export class InvalidInput extends Error {}

/** `types.tensor-metadata` */
export type TensorSpec = witTypes.TensorMetadata;
export function spec(name: string, datatype: string, shape: number[]): TensorSpec;
export interface BytesOutput { bytes: { shape: number[]; elements: Uint8Array[] } }
export function bytesOutput(shape: number[], elements: (string | Uint8Array)[]): BytesOutput;

export type ParameterValue = boolean | bigint | number | string;
export class Request {
  readonly requestedOutputs: string[] | undefined;
  numeric(name: string): Tensor;
  bytes(name: string): Uint8Array[];
  strings(name: string): string[];
  parameter(key: string, fallback?: ParameterValue): ParameterValue | undefined;
  wants(name: string): boolean;
}

export abstract class Model {
  static inputs: TensorSpec[];
  static outputs: TensorSpec[];
  abstract infer(request: Request): Record<string, Tensor | BytesOutput>;
}

/** The `handler` interface the component exports. */
export type Handler = typeof import("edgeserve:handler/handler@0.1.5");
export function exportHandler(model: new () => Model): Handler;
