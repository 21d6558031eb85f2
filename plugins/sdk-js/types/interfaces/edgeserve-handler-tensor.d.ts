declare module 'edgeserve:handler/tensor@0.1.5' {
  /**
   * Matrix product over the last two axes, batch axes broadcast.
   * a: [..., m, k]; b: [..., k, n], or [..., n, k] when `transpose-b`.
   */
  export function matmul(a: Tensor, b: Tensor, transposeB: boolean): Tensor;
  /**
   * `activation(a · b + bias)` in one pass: a `matmul` (same shapes) whose
   * bias ([n], added to every row) and elementwise activation are applied as
   * the product is written, saving the passes of separate `binary` and `unary` calls.
   */
  export function linear(a: Tensor, b: Tensor, transposeB: boolean, bias: Tensor | undefined, activation: UnaryOp | undefined): Tensor;
  /**
   * `a op b` with NumPy broadcasting. Both operands share one dtype.
   */
  export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor;
  /**
   * `op(x)` elementwise; float dtypes only except `neg` and `abs`.
   */
  export function unary(op: UnaryOp, x: Tensor): Tensor;
  /**
   * `x * factor + offset` elementwise, in one pass.
   */
  export function affine(x: Tensor, factor: number, offset: number): Tensor;
  /**
   * Softmax along `axis` (negative counts from the end).
   */
  export function softmax(x: Tensor, axis: number): Tensor;
  /**
   * Layer normalization over the last axis, then `* gamma + beta` when given.
   */
  export function layerNorm(x: Tensor, gamma: Tensor | undefined, beta: Tensor | undefined, eps: number): Tensor;
  /**
   * Rows of `table` ([vocab, dim]) picked by integer `ids` ([...]) -> [..., dim].
   */
  export function embedding(table: Tensor, ids: Tensor): Tensor;
  /**
   * Same elements, new shape; one entry may be -1 (inferred).
   */
  export function reshape(x: Tensor, shape: Int32Array): Tensor;
  /**
   * Axes reordered: output axis i is input axis perm[i].
   */
  export function transpose(x: Tensor, perm: Uint32Array): Tensor;
  /**
   * Elements `start..end` along `axis`.
   */
  export function slice(x: Tensor, axis: number, start: number, end: number): Tensor;
  /**
   * Tensors joined along `axis`; all other axes must match.
   */
  export function concat(xs: Array<Tensor>, axis: number): Tensor;
  /**
   * Reduce along `axis`; `argmax`/`argmin` produce i64 indices.
   */
  export function reduce(op: ReduceOp, x: Tensor, axis: number, keepDims: boolean): Tensor;
  /**
   * Element conversion to another dtype.
   */
  export function cast(x: Tensor, to: Dtype): Tensor;
  /**
   * 2-D convolution. x: [n, c, h, w]; weight: [o, c/groups, kh, kw]; bias: [o].
   */
  export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | undefined, stride: [number, number], padding: [number, number], dilation: [number, number], groups: number): Tensor;
  /**
   * `conv2d` with padding per side and its output clipped as it is
   * written: one pass where a `pad` before it and a `clip` after it would
   * each copy the whole tensor.
   */
  export function conv2dFused(x: Tensor, weight: Tensor, bias: Tensor | undefined, options: Conv2dOptions): Tensor;
  /**
   * 2-D pooling over [n, c, h, w]; `avg` excludes padding from the count.
   */
  export function pool2d(kind: PoolKind, x: Tensor, kernel: [number, number], stride: [number, number], padding: [number, number]): Tensor;
  /**
   * Scaled dot-product attention: softmax(q·kᵀ·scale + mask)·v.
   * q: [..., lq, d]; k: [..., lk, d]; v: [..., lk, dv]; mask broadcasts to
   * [..., lq, lk] and is added to the scores; `causal` hides keys after
   * each query (aligned to the end, so it works with a KV cache);
   * `scale` defaults to 1/sqrt(d).
   */
  export function attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | undefined, scale: number | undefined, causal: boolean): Tensor;
  /**
   * The `k` largest entries along the last axis: (values, i64 indices), largest first.
   */
  export function topK(x: Tensor, k: number): [Tensor, Tensor];
  /**
   * `a op b` with NumPy broadcasting, as a u8 mask: 1 where it holds, 0
   * elsewhere (as in IEEE 754, only `not-equal` holds for a NaN operand).
   * Both operands share one dtype.
   */
  export function compare(op: CompareOp, a: Tensor, b: Tensor): Tensor;
  /**
   * `a` where `condition` is nonzero, `b` elsewhere; the three broadcast
   * like NumPy. `condition` may be any dtype (a `compare` mask is u8);
   * `a` and `b` share one dtype, which the result has.
   */
  export function where(condition: Tensor, a: Tensor, b: Tensor): Tensor;
  /**
   * Entries of `x` picked along `axis` by integer `indices` (i32 or i64,
   * any shape; negative ones count from the end), as ONNX `Gather` and
   * `numpy.take` do: x [..before, n, ..after] -> [..before, ..indices, ..after].
   * An index outside -n..n is an `invalid-argument` error.
   */
  export function gather(x: Tensor, indices: Tensor, axis: number): Tensor;
  /**
   * `x` broadcast with `shape` like NumPy (ONNX `Expand`): the result's
   * shape is the broadcast of both, each element copied where it repeats.
   */
  export function expand(x: Tensor, shape: Uint32Array): Tensor;
  /**
   * Elementwise `min(max(x, lo), hi)`; an absent bound does not clip.
   * Bounds convert to `x`'s dtype like `full`'s value; NaN stays NaN.
   */
  export function clip(x: Tensor, lo: number | undefined, hi: number | undefined): Tensor;
  /**
   * Self-attention over a batch of sequences packed back to back without
   * padding, as FlashAttention's varlen kernels and
   * text-embeddings-inference run BERT batches: no work goes to padding.
   * q: [total, heads, d]; k: [total, heads, d]; v: [total, heads, dv]
   * (a `linear` output [total, heads · d] reshaped, no transpose), where
   * `offsets` holds n + 1 token offsets, 0 first and `total` last, never
   * decreasing: sequence i is tokens offsets[i] to offsets[i + 1]
   * (exclusive). Each token attends to the tokens of its own sequence
   * only, so keys need no mask; `causal` also hides the later tokens of
   * its sequence. Result: [total, heads, dv], equal to `attention` of
   * each sequence alone. `scale` defaults to 1/sqrt(d). Bad offsets are
   * an `invalid-argument` error.
   */
  export function attentionVarlen(q: Tensor, k: Tensor, v: Tensor, offsets: Uint32Array, scale: number | undefined, causal: boolean): Tensor;
  /**
   * An LSTM layer over a whole sequence in one call, where a step at a
   * time would be a dozen small calls: ONNX's `LSTM` without peepholes or
   * clipping, for one direction. For each step t (the last first when
   * `reverse`), gates = x-gates[t] + h·rᵀ, split along the last axis into
   * i, o, f and g (ONNX's order); then c = σ(f)⊙c + σ(i)⊙tanh(g) and
   * h = σ(o)⊙tanh(c), starting from h0 and c0.
   * x-gates: [steps, batch, 4·hidden], the input's product with every
   * gate's weights with the biases added (one `linear` over all steps);
   * r: [4·hidden, hidden]; h0, c0: [batch, hidden]; all f32.
   * Returns (y, h, c): every step's h as [steps, batch, hidden] in time
   * order whatever the direction, and the last step's h and c
   * ([batch, hidden]).
   */
  export function lstm(xGates: Tensor, r: Tensor, h0: Tensor, c0: Tensor, reverse: boolean): [Tensor, Tensor, Tensor];
  /**
   * Element types a tensor can hold.
   * # Variants
   * 
   * ## `"f32"`
   * 
   * ## `"f16"`
   * 
   * ## `"i32"`
   * 
   * ## `"i64"`
   * 
   * ## `"u8"`
   */
  export type Dtype = 'f32' | 'f16' | 'i32' | 'i64' | 'u8';
  /**
   * Why an operation was refused.
   */
  export type Error = ErrorShape | ErrorDtype | ErrorInvalidArgument | ErrorUnsupported | ErrorOutOfMemory | ErrorDeviceLost;
  /**
   * Shapes do not fit the operation; the text names both shapes.
   */
  export interface ErrorShape {
    tag: 'shape',
    val: string,
  }
  /**
   * The element type is not accepted by the operation.
   */
  export interface ErrorDtype {
    tag: 'dtype',
    val: string,
  }
  /**
   * An argument (axis, permutation, stride…) is out of range.
   */
  export interface ErrorInvalidArgument {
    tag: 'invalid-argument',
    val: string,
  }
  /**
   * The backend does not implement this combination.
   */
  export interface ErrorUnsupported {
    tag: 'unsupported',
    val: string,
  }
  /**
   * The host could not allocate memory for the result.
   */
  export interface ErrorOutOfMemory {
    tag: 'out-of-memory',
    val: string,
  }
  /**
   * The compute device was lost (GPU reset or removed); the text names
   * the device and why. Nothing more will run on it.
   */
  export interface ErrorDeviceLost {
    tag: 'device-lost',
    val: string,
  }
  /**
   * Elementwise binary operations; operands broadcast like NumPy.
   * # Variants
   * 
   * ## `"add"`
   * 
   * ## `"sub"`
   * 
   * ## `"mul"`
   * 
   * ## `"div"`
   * 
   * ## `"maximum"`
   * 
   * ## `"minimum"`
   * 
   * ## `"pow"`
   */
  export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'maximum' | 'minimum' | 'pow';
  /**
   * Elementwise unary operations.
   * # Variants
   * 
   * ## `"neg"`
   * 
   * ## `"abs"`
   * 
   * ## `"exp"`
   * 
   * ## `"log"`
   * 
   * ## `"sqrt"`
   * 
   * ## `"rsqrt"`
   * 
   * ## `"relu"`
   * 
   * ## `"gelu"`
   * 
   * ## `"gelu-tanh"`
   * 
   * ## `"tanh"`
   * 
   * ## `"sigmoid"`
   * 
   * ## `"silu"`
   * 
   * ## `"erf"`
   */
  export type UnaryOp = 'neg' | 'abs' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'relu' | 'gelu' | 'gelu-tanh' | 'tanh' | 'sigmoid' | 'silu' | 'erf';
  /**
   * Reductions over one axis.
   * # Variants
   * 
   * ## `"sum"`
   * 
   * ## `"mean"`
   * 
   * ## `"max"`
   * 
   * ## `"min"`
   * 
   * ## `"argmax"`
   * 
   * ## `"argmin"`
   */
  export type ReduceOp = 'sum' | 'mean' | 'max' | 'min' | 'argmax' | 'argmin';
  /**
   * Pooling kinds for `pool2d`.
   * # Variants
   * 
   * ## `"max"`
   * 
   * ## `"avg"`
   */
  export type PoolKind = 'max' | 'avg';
  /**
   * Elementwise comparisons for `compare`.
   * # Variants
   * 
   * ## `"equal"`
   * 
   * ## `"not-equal"`
   * 
   * ## `"less"`
   * 
   * ## `"less-equal"`
   * 
   * ## `"greater"`
   * 
   * ## `"greater-equal"`
   */
  export type CompareOp = 'equal' | 'not-equal' | 'less' | 'less-equal' | 'greater' | 'greater-equal';
  /**
   * How `conv2d-fused` slides its kernel and what it does to each output;
   * pairs are (height, width).
   */
  export interface Conv2dOptions {
    stride: [number, number],
    /**
     * Zeros before each axis (top, left).
     */
    paddingBegin: [number, number],
    /**
     * Zeros after each axis (bottom, right). TensorFlow's "SAME"
     * padding of a stride-2 layer puts one more here than before.
     */
    paddingEnd: [number, number],
    dilation: [number, number],
    groups: number,
    /**
     * Each output is clipped to `[clip-lo, clip-hi]` as it is written,
     * as `clip` would (ReLU: lo 0; ReLU6: lo 0 and hi 6); an absent
     * bound does not clip.
     */
    clipLo?: number,
    clipHi?: number,
  }
  
  export class Tensor implements Disposable {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * Copies little-endian element bytes into a new tensor.
    * `data` must hold exactly product(shape) elements of `dtype`.
    */
    static fromBytes(dtype: Dtype, shape: Uint32Array, data: Uint8Array): Tensor;
    /**
    * A tensor of `shape` with every element equal to `value` (converted to `dtype`).
    */
    static full(dtype: Dtype, shape: Uint32Array, value: number): Tensor;
    /**
    * The tensor's dimensions, outermost first.
    */
    shape(): Uint32Array;
    /**
    * The tensor's element type.
    */
    dtype(): Dtype;
    /**
    * Copies the elements out as little-endian bytes. The only point
    * where data leaves the backend.
    */
    read(): Uint8Array;
    [Symbol.dispose](): void;
  }
}
