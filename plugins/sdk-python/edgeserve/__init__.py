"""edgeserve's Python SDK: write a model handler whose math runs on host kernels.

A handler is a :class:`Model` subclass; :func:`export` turns it into the
``Handler`` class componentize-py looks for in the app module::

    from edgeserve import Model, spec, export

    class Double(Model):
        inputs = [spec("x", "FP32", [-1])]
        outputs = [spec("y", "FP32", [-1])]

        def infer(self, request):
            return {"y": request.numeric("x") * 2 + 1}

    Handler = export(Double)

The SDK's version follows the contract it is built against
(``edgeserve:handler@CONTRACT``).
"""

from .tensor import Tensor, TensorError, DType
from .request import Request, InvalidInput, spec, bytes_output
from .handler import Model, export
from . import model, nn

__version__ = "0.1.5"
#: The WIT package version this SDK binds to.
CONTRACT = "edgeserve:handler@0.1.5"

__all__ = [
    "Tensor",
    "TensorError",
    "DType",
    "Request",
    "InvalidInput",
    "spec",
    "bytes_output",
    "Model",
    "export",
    "model",
    "nn",
    "CONTRACT",
]
