/// <reference path="./edgeserve-handler-types.d.ts" />
declare module 'edgeserve:handler/handler@0.1.5' {
  /**
   * The model's inputs and outputs, checked by the host before `infer`.
   */
  export function metadata(): ModelMetadata;
  /**
   * Called once per instance before it serves, e.g. to look up weights.
   */
  export function init(): void;
  /**
   * Runs one request; the host answers with the returned outputs.
   */
  export function infer(request: InferRequest): Array<NamedTensor>;
  export type ModelMetadata = import('edgeserve:handler/types@0.1.5').ModelMetadata;
  export type InferRequest = import('edgeserve:handler/types@0.1.5').InferRequest;
  export type NamedTensor = import('edgeserve:handler/types@0.1.5').NamedTensor;
  export type InferError = import('edgeserve:handler/types@0.1.5').InferError;
}
