/// <reference path="./edgeserve-handler-tensor.d.ts" />
declare module 'edgeserve:handler/model@0.1.5' {
  /**
   * A weight from the model's safetensors file. Weights are loaded once per
   * model and shared read-only by every instance; this returns a handle,
   * not a copy.
   */
  export function weight(name: string): Tensor;
  /**
   * Names of every weight the model ships.
   */
  export function weightNames(): Array<string>;
  /**
   * A `parameters` entry from the model's config file.
   */
  export function parameter(key: string): string | undefined;
  /**
   * A small auxiliary file shipped next to the model (tokenizer vocabularies
   * and the like), by file name. Only files in the model's version folder
   * are reachable.
   */
  export function asset(name: string): Uint8Array | undefined;
  export type Tensor = import('edgeserve:handler/tensor@0.1.5').Tensor;
  export type Error = import('edgeserve:handler/tensor@0.1.5').Error;
}
