"""The bridge from a :class:`Model` subclass to the contract's ``handler`` export."""

import sys
import traceback
from typing import Dict, List, Optional, Type, Union

from componentize_py_types import Err
from wit_world.imports import types as wit

from .request import InvalidInput, Request
from .tensor import Tensor


class Model:
    """Base class of a handler.

    Set ``inputs``/``outputs`` to lists of :func:`~edgeserve.spec`, load
    weights in ``__init__`` (run once per instance) and compute in ``infer``,
    which returns ``{name: Tensor | BytesTensor}``.
    """

    inputs: List[wit.TensorMetadata] = []
    outputs: List[wit.TensorMetadata] = []

    def infer(self, request: Request) -> Dict[str, Union[Tensor, wit.BytesTensor]]:
        raise NotImplementedError


def _named(name: str, value) -> wit.NamedTensor:
    if isinstance(value, Tensor):
        return wit.NamedTensor(name, wit.TensorData_Numeric(value.handle))
    if isinstance(value, wit.BytesTensor):
        return wit.NamedTensor(name, wit.TensorData_Bytes(value))
    raise TypeError(f"output {name!r} is a {type(value).__name__}, not a Tensor or BytesTensor")


def _failure() -> str:
    """Logs the running exception's traceback to stderr (the host log, tagged
    with the model) and returns its one-line message."""
    error = sys.exc_info()[1]
    traceback.print_exc(file=sys.stderr)
    return f"{type(error).__name__}: {error}"


def export(model_class: Type[Model]):
    """The ``Handler`` class that componentize-py exports for ``model_class``.

    ``InvalidInput`` becomes a 400; any other exception a 500 whose message
    names it, with its traceback in the server log.
    """

    class Handler:
        instance: Optional[Model] = None

        def metadata(self) -> wit.ModelMetadata:
            return wit.ModelMetadata(list(model_class.inputs), list(model_class.outputs))

        def init(self) -> None:
            try:
                Handler.instance = model_class()
            except Exception:
                raise Err(f"init failed: {_failure()}")

        def infer(self, request: wit.InferRequest) -> List[wit.NamedTensor]:
            try:
                outputs = Handler.instance.infer(Request(request))
                return [_named(name, value) for name, value in outputs.items()]
            except InvalidInput as err:
                raise Err(wit.InferError_InvalidInput(str(err)))
            except Exception:
                raise Err(wit.InferError_Internal(_failure()))

    Handler.__name__ = Handler.__qualname__ = "Handler"
    return Handler
