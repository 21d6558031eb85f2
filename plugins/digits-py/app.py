"""`digits` (plugins/digits) in Python: the same MLP on the same weights,
64 → 64 → 32 → 10 with ReLU between layers and softmax at the end, each layer
one host `linear` pass (PyTorch layout, x · Wᵀ + b)."""

from edgeserve import Model, export, nn, spec


class Digits(Model):
    inputs = [spec("pixels", "FP32", [-1, 64])]
    outputs = [spec("probabilities", "FP32", [-1, 10]), spec("label", "INT64", [-1])]

    def __init__(self):
        self.fc1 = nn.Linear.load("fc1", activation="relu")
        self.fc2 = nn.Linear.load("fc2", activation="relu")
        self.fc3 = nn.Linear.load("fc3")

    def infer(self, request):
        logits = self.fc3(self.fc2(self.fc1(request.numeric("pixels"))))
        return {"probabilities": logits.softmax(-1), "label": logits.argmax(-1)}


Handler = export(Digits)
