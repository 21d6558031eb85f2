// `digits` (plugins/digits) in JavaScript: the same MLP on the same weights,
// 64 → 64 → 32 → 10 with ReLU between layers and softmax at the end, each
// layer one host `linear` pass (PyTorch layout, x · Wᵀ + b).
import { Model, exportHandler, nn, spec } from "./sdk/edgeserve.js";

class Digits extends Model {
  static inputs = [spec("pixels", "FP32", [-1, 64])];
  static outputs = [spec("probabilities", "FP32", [-1, 10]), spec("label", "INT64", [-1])];

  constructor() {
    super();
    this.fc1 = nn.linear("fc1", { activation: "relu" });
    this.fc2 = nn.linear("fc2", { activation: "relu" });
    this.fc3 = nn.linear("fc3");
  }

  infer(request) {
    const logits = this.fc3(this.fc2(this.fc1(request.numeric("pixels"))));
    return { probabilities: logits.softmax(-1), label: logits.argmax(-1) };
  }
}

export const handler = exportHandler(Digits);
