/// <reference path="./edgeserve-handler-tensor.d.ts" />
declare module 'edgeserve:handler/types@0.1.5' {
  export type Tensor = import('edgeserve:handler/tensor@0.1.5').Tensor;
  /**
   * One input or output as the Open Inference Protocol declares it.
   */
  export interface TensorMetadata {
    name: string,
    /**
     * OIP datatype: "FP32", "FP16", "INT32", "INT64", "UINT8" or "BYTES".
     */
    datatype: string,
    /**
     * Dimensions; -1 accepts any size.
     */
    shape: BigInt64Array,
  }
  /**
   * What the model accepts and produces.
   */
  export interface ModelMetadata {
    inputs: Array<TensorMetadata>,
    outputs: Array<TensorMetadata>,
  }
  /**
   * A BYTES tensor: `elements` in row-major order.
   */
  export interface BytesTensor {
    shape: Uint32Array,
    elements: Array<Uint8Array>,
  }
  /**
   * Tensor contents: numeric data stays on the host; text travels as bytes.
   */
  export type TensorData = TensorDataNumeric | TensorDataBytes;
  export interface TensorDataNumeric {
    tag: 'numeric',
    val: Tensor,
  }
  export interface TensorDataBytes {
    tag: 'bytes',
    val: BytesTensor,
  }
  /**
   * A named input or output.
   */
  export interface NamedTensor {
    name: string,
    data: TensorData,
  }
  /**
   * Why a handler refused or failed a request.
   */
  export type InferError = InferErrorInvalidInput | InferErrorInternal;
  /**
   * The request is wrong (bad text, option out of range…): HTTP 400.
   */
  export interface InferErrorInvalidInput {
    tag: 'invalid-input',
    val: string,
  }
  /**
   * The handler itself failed: HTTP 500.
   */
  export interface InferErrorInternal {
    tag: 'internal',
    val: string,
  }
  /**
   * A request parameter value (OIP `parameters`).
   */
  export type ParameterValue = ParameterValueBoolean | ParameterValueInteger | ParameterValueDouble | ParameterValueText;
  export interface ParameterValueBoolean {
    tag: 'boolean',
    val: boolean,
  }
  export interface ParameterValueInteger {
    tag: 'integer',
    val: bigint,
  }
  export interface ParameterValueDouble {
    tag: 'double',
    val: number,
  }
  export interface ParameterValueText {
    tag: 'text',
    val: string,
  }
  /**
   * One inference call.
   */
  export interface InferRequest {
    inputs: Array<NamedTensor>,
    parameters: Array<[string, ParameterValue]>,
    /**
     * The outputs the client asked for by name (OIP `outputs`); `none`
     * means all. A handler may skip computing the others; the host
     * answers with the requested ones only either way.
     */
    outputs?: Array<string>,
  }
}
