"""Requests and responses: named inputs in, named outputs out."""

from typing import Dict, List, Optional, Sequence, Union

from wit_world.imports import types as wit

from .tensor import Tensor


class InvalidInput(Exception):
    """Raise from ``infer`` to refuse a request: the client gets a 400 with the message."""


def spec(name: str, datatype: str, shape: Sequence[int]) -> wit.TensorMetadata:
    """One input or output declaration (OIP datatype, ``-1`` for any size)."""
    return wit.TensorMetadata(name, datatype, list(shape))


def bytes_output(shape: Sequence[int], elements: Sequence[Union[bytes, str]]) -> wit.BytesTensor:
    """A BYTES output; ``str`` elements are UTF-8 encoded."""
    return wit.BytesTensor(list(shape), [e.encode() if isinstance(e, str) else bytes(e) for e in elements])


class Request:
    """One inference call: inputs by name, request parameters, wanted outputs."""

    def __init__(self, raw: wit.InferRequest):
        self._inputs = {named.name: named.data for named in raw.inputs}
        self.parameters: Dict[str, Union[bool, int, float, str]] = {key: value.value for key, value in raw.parameters}
        #: The outputs the client asked for, or ``None`` for all.
        self.requested_outputs: Optional[List[str]] = raw.outputs

    def numeric(self, name: str) -> Tensor:
        """The numeric input ``name``; a 400 when it is missing or BYTES."""
        data = self._input(name)
        if not isinstance(data, wit.TensorData_Numeric):
            raise InvalidInput(f"input {name!r} must be numeric, not BYTES")
        return Tensor(data.value)

    def bytes(self, name: str) -> List[bytes]:
        """The elements of BYTES input ``name``, row-major."""
        data = self._input(name)
        if not isinstance(data, wit.TensorData_Bytes):
            raise InvalidInput(f"input {name!r} must be BYTES")
        return list(data.value.elements)

    def strings(self, name: str) -> List[str]:
        """The elements of BYTES input ``name`` as UTF-8 text."""
        try:
            return [element.decode() for element in self.bytes(name)]
        except UnicodeDecodeError as err:
            raise InvalidInput(f"input {name!r} is not UTF-8: {err}") from None

    def parameter(self, key: str, default=None):
        """Request parameter ``key`` (OIP ``parameters``), or ``default``."""
        return self.parameters.get(key, default)

    def wants(self, name: str) -> bool:
        """Whether output ``name`` is asked for (all are when none are named)."""
        return self.requested_outputs is None or name in self.requested_outputs

    def _input(self, name: str):
        try:
            return self._inputs[name]
        except KeyError:
            raise InvalidInput(f"missing input {name!r}") from None
