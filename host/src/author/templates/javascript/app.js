// The `{{name}}` model handler: y = 2·x + 1, computed on host kernels.
import { Model, spec, exportHandler } from "./sdk/edgeserve.js";

class {{class}} extends Model {
  static inputs = [spec("x", "FP32", [-1])];
  static outputs = [spec("y", "FP32", [-1])];

  constructor() {
    super();
    // Runs once per instance: look up weights here with model.weight(name).
  }

  infer(request) {
    const x = request.numeric("x");
    // One host pass (affine); x.mul(2).add(1) works too, in two.
    return { y: x.affine(2, 1) };
  }
}

// componentize-js exports this object as the contract's `handler`.
export const handler = exportHandler({{class}});
