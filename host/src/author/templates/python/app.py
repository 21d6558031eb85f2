"""The `{{name}}` model handler: y = 2·x + 1, computed on host kernels."""

from edgeserve import Model, export, spec


class {{class}}(Model):
    inputs = [spec("x", "FP32", [-1])]
    outputs = [spec("y", "FP32", [-1])]

    def __init__(self):
        # Runs once per instance: look up weights here with model.weight(name).
        pass

    def infer(self, request):
        x = request.numeric("x")
        # One host pass (affine); `x * 2 + 1` works too, in two.
        return {"y": x.affine(2.0, 1.0)}


# componentize-py exports the class named `Handler` of this module.
Handler = export({{class}})
