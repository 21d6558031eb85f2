"""Host-owned tensors: a :class:`Tensor` holds a handle, and every operation
asks the host to run it, so the arithmetic runs on the host's kernels."""

import array
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from componentize_py_types import Err
from wit_world.imports import tensor as wit

#: Element types, as the contract names them (``DType.F32`` …).
DType = wit.Dtype

_TYPECODES = {
    wit.Dtype.F32: "f",
    wit.Dtype.I32: "i",
    wit.Dtype.I64: "q",
    wit.Dtype.U8: "B",
}

UNARY = wit.UnaryOp
BINARY = wit.BinaryOp
REDUCE = wit.ReduceOp
COMPARE = wit.CompareOp
POOL = wit.PoolKind

Number = Union[int, float]
# (height, width), or one int for both.
Pair = Union[int, Tuple[int, int]]


class TensorError(Exception):
    """The host refused an operation: bad shapes, dtypes or arguments."""

    def __init__(self, kind: str, detail: str):
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")

    @classmethod
    def from_wit(cls, error) -> "TensorError":
        """The exception for a contract ``tensor.error`` value."""
        return cls(type(error).__name__.removeprefix("Error_").lower(), str(error.value))


def _call(op, *args):
    """Runs a host operation, turning the contract's error into TensorError."""
    try:
        return op(*args)
    except Err as err:
        raise TensorError.from_wit(err.value) from None


def _wrap(op, *args) -> "Tensor":
    return Tensor(_call(op, *args))


class Tensor:
    """An n-dimensional array held by the host.

    Operators run on the host: ``+ - * /`` between tensors broadcast like
    NumPy; with a Python number they are one ``affine`` pass; ``@`` is a
    matrix product.
    """

    __slots__ = ("handle",)

    def __init__(self, handle: wit.Tensor):
        self.handle = handle

    # -- construction and read-out -------------------------------------
    @staticmethod
    def from_list(values: Iterable[Number], shape: Optional[Sequence[int]] = None, dtype: wit.Dtype = wit.Dtype.F32) -> "Tensor":
        """A tensor of ``dtype`` holding ``values`` (flat, row-major); 1-D when ``shape`` is omitted."""
        data = array.array(_TYPECODES[dtype], values)
        return Tensor.from_bytes(data.tobytes(), list(shape) if shape is not None else [len(data)], dtype)

    @staticmethod
    def from_bytes(data: bytes, shape: Sequence[int], dtype: wit.Dtype = wit.Dtype.F32) -> "Tensor":
        """A tensor from little-endian element bytes."""
        return _wrap(wit.Tensor.from_bytes, dtype, list(shape), bytes(data))

    @staticmethod
    def full(shape: Sequence[int], value: float, dtype: wit.Dtype = wit.Dtype.F32) -> "Tensor":
        """A tensor of ``shape`` with every element ``value``."""
        return _wrap(wit.Tensor.full, dtype, list(shape), float(value))

    @property
    def shape(self) -> List[int]:
        """Dimensions, outermost first."""
        return list(self.handle.shape())

    @property
    def dtype(self) -> wit.Dtype:
        """The element type."""
        return self.handle.dtype()

    def tobytes(self) -> bytes:
        """The elements as little-endian bytes (the only copy out of the host)."""
        return _call(self.handle.read)

    def array(self) -> array.array:
        """The elements as a flat ``array.array`` (f32 → ``'f'``, i64 → ``'q'`` …)."""
        out = array.array(_TYPECODES[self.dtype])
        out.frombytes(self.tobytes())
        return out

    def tolist(self) -> list:
        """The elements as a flat Python list."""
        return self.array().tolist()

    def __repr__(self) -> str:
        return f"Tensor(shape={self.shape}, dtype={self.dtype.name})"

    # -- operations -----------------------------------------------------
    def matmul(self, other: "Tensor", transpose_b: bool = False) -> "Tensor":
        """Matrix product over the last two axes."""
        return _wrap(wit.matmul, self.handle, other.handle, transpose_b)

    def linear(self, weight: "Tensor", bias: Optional["Tensor"] = None, *, transpose_b: bool = False, activation: Optional[wit.UnaryOp] = None) -> "Tensor":
        """``activation(self · weight + bias)`` in one host pass."""
        return _wrap(wit.linear, self.handle, weight.handle, transpose_b, bias.handle if bias else None, activation)

    def binary(self, op: wit.BinaryOp, other: "Tensor") -> "Tensor":
        """``self op other`` with broadcasting."""
        return _wrap(wit.binary, op, self.handle, other.handle)

    def unary(self, op: wit.UnaryOp) -> "Tensor":
        """``op(self)`` elementwise."""
        return _wrap(wit.unary, op, self.handle)

    def affine(self, factor: float, offset: float) -> "Tensor":
        """``self * factor + offset`` in one pass."""
        return _wrap(wit.affine, self.handle, float(factor), float(offset))

    def softmax(self, axis: int = -1) -> "Tensor":
        return _wrap(wit.softmax, self.handle, axis)

    def layer_norm(self, gamma: Optional["Tensor"] = None, beta: Optional["Tensor"] = None, eps: float = 1e-5) -> "Tensor":
        return _wrap(wit.layer_norm, self.handle, gamma.handle if gamma else None, beta.handle if beta else None, eps)

    def reshape(self, *shape: int) -> "Tensor":
        dims = list(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else list(shape)
        return _wrap(wit.reshape, self.handle, dims)

    def transpose(self, *perm: int) -> "Tensor":
        return _wrap(wit.transpose, self.handle, list(perm))

    def slice(self, axis: int, start: int, end: int) -> "Tensor":
        return _wrap(wit.slice, self.handle, axis, start, end)

    def reduce(self, op: wit.ReduceOp, axis: int = -1, keep_dims: bool = False) -> "Tensor":
        return _wrap(wit.reduce, op, self.handle, axis, keep_dims)

    def sum(self, axis: int = -1, keep_dims: bool = False) -> "Tensor":
        return self.reduce(REDUCE.SUM, axis, keep_dims)

    def mean(self, axis: int = -1, keep_dims: bool = False) -> "Tensor":
        return self.reduce(REDUCE.MEAN, axis, keep_dims)

    def argmax(self, axis: int = -1, keep_dims: bool = False) -> "Tensor":
        return self.reduce(REDUCE.ARGMAX, axis, keep_dims)

    def cast(self, to: wit.Dtype) -> "Tensor":
        return _wrap(wit.cast, self.handle, to)

    def embedding(self, ids: "Tensor") -> "Tensor":
        """Rows of this table picked by ``ids``."""
        return _wrap(wit.embedding, self.handle, ids.handle)

    def top_k(self, k: int) -> Tuple["Tensor", "Tensor"]:
        values, indices = _call(wit.top_k, self.handle, k)
        return Tensor(values), Tensor(indices)

    def compare(self, op: wit.CompareOp, other: "Tensor") -> "Tensor":
        """``self op other`` (broadcasting) as a u8 mask: 1 where it holds."""
        return _wrap(wit.compare, op, self.handle, other.handle)

    def eq(self, other: "Tensor") -> "Tensor":
        return self.compare(COMPARE.EQUAL, other)

    def lt(self, other: "Tensor") -> "Tensor":
        return self.compare(COMPARE.LESS, other)

    def gt(self, other: "Tensor") -> "Tensor":
        return self.compare(COMPARE.GREATER, other)

    def gather(self, indices: "Tensor", axis: int = 0) -> "Tensor":
        """Entries picked along ``axis`` by integer ``indices`` (negative ones count from the end)."""
        return _wrap(wit.gather, self.handle, indices.handle, axis)

    def expand(self, *shape: int) -> "Tensor":
        """Broadcast with ``shape`` (NumPy rules, both ways)."""
        return _wrap(wit.expand, self.handle, list(shape))

    def clip(self, lo: Optional[float] = None, hi: Optional[float] = None) -> "Tensor":
        """``min(max(self, lo), hi)``; an omitted bound does not clip."""
        return _wrap(wit.clip, self.handle, None if lo is None else float(lo), None if hi is None else float(hi))

    # -- convolution and pooling ---------------------------------------
    def conv2d(
        self,
        weight: "Tensor",
        bias: Optional["Tensor"] = None,
        *,
        stride: Pair = 1,
        padding: Pair = 0,
        padding_end: Optional[Pair] = None,
        dilation: Pair = 1,
        groups: int = 1,
        clip: Tuple[Optional[float], Optional[float]] = (None, None),
    ) -> "Tensor":
        """2-D convolution of ``self`` (``[n, c, h, w]``) with ``weight``
        (``[o, c // groups, kh, kw]``) plus an optional ``bias`` (``[o]``);
        pairs are (height, width). ``padding`` adds zeros before each axis,
        and after it unless ``padding_end`` says otherwise (TensorFlow's
        "SAME" padding of a stride-2 layer puts one more after). Each output
        is clipped to ``clip = (lo, hi)`` as it is written, ``None`` not
        clipping (ReLU: ``(0, None)``; ReLU6: ``(0, 6)``). Uneven padding or
        a clip is the contract's ``conv2d-fused``."""
        stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
        end = padding if padding_end is None else _pair(padding_end)
        lo, hi = (None if bound is None else float(bound) for bound in clip)
        b = bias.handle if bias else None
        if end != padding or lo is not None or hi is not None:
            options = wit.Conv2dOptions(
                stride=stride, padding_begin=padding, padding_end=end, dilation=dilation, groups=int(groups), clip_lo=lo, clip_hi=hi
            )
            return _wrap(wit.conv2d_fused, self.handle, weight.handle, b, options)
        return _wrap(wit.conv2d, self.handle, weight.handle, b, stride, padding, dilation, int(groups))

    def pool2d(
        self,
        kind: wit.PoolKind,
        kernel: Pair,
        stride: Optional[Pair] = None,
        padding: Pair = 0,
    ) -> "Tensor":
        """2-D pooling over ``[n, c, h, w]`` (``POOL.MAX`` or ``POOL.AVG``,
        which leaves padding out of the count); ``stride`` defaults to the
        kernel, as PyTorch's does."""
        kernel = _pair(kernel)
        return _wrap(wit.pool2d, kind, self.handle, kernel, kernel if stride is None else _pair(stride), _pair(padding))

    def max_pool2d(self, kernel: Pair, stride: Optional[Pair] = None, padding: Pair = 0) -> "Tensor":
        return self.pool2d(POOL.MAX, kernel, stride, padding)

    def avg_pool2d(self, kernel: Pair, stride: Optional[Pair] = None, padding: Pair = 0) -> "Tensor":
        return self.pool2d(POOL.AVG, kernel, stride, padding)

    def relu(self) -> "Tensor":
        return self.unary(UNARY.RELU)

    def gelu(self) -> "Tensor":
        return self.unary(UNARY.GELU)

    def exp(self) -> "Tensor":
        return self.unary(UNARY.EXP)

    def tanh(self) -> "Tensor":
        return self.unary(UNARY.TANH)

    def sigmoid(self) -> "Tensor":
        return self.unary(UNARY.SIGMOID)

    # -- operators ------------------------------------------------------
    def _arith(self, other, op: wit.BinaryOp, scalar) -> "Tensor":
        if isinstance(other, Tensor):
            return self.binary(op, other)
        if isinstance(other, (int, float)):
            return scalar(float(other))
        return NotImplemented

    def __add__(self, other):
        return self._arith(other, BINARY.ADD, lambda s: self.affine(1.0, s))

    __radd__ = __add__

    def __sub__(self, other):
        return self._arith(other, BINARY.SUB, lambda s: self.affine(1.0, -s))

    def __rsub__(self, other):
        return self._arith(other, BINARY.SUB, lambda s: self.affine(-1.0, s))

    def __mul__(self, other):
        return self._arith(other, BINARY.MUL, lambda s: self.affine(s, 0.0))

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._arith(other, BINARY.DIV, lambda s: self.affine(1.0 / s, 0.0))

    def __matmul__(self, other: "Tensor") -> "Tensor":
        return self.matmul(other)

    def __neg__(self) -> "Tensor":
        return self.unary(UNARY.NEG)


def _pair(value: Pair) -> Tuple[int, int]:
    """A (height, width) pair from a pair or one int for both."""
    if isinstance(value, int):
        return (value, value)
    height, width = value
    return (int(height), int(width))


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Tensors joined along ``axis``."""
    return _wrap(wit.concat, [t.handle for t in tensors], axis)


def where(condition: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a`` where ``condition`` is nonzero, ``b`` elsewhere (the three broadcast)."""
    return _wrap(wit.where, condition.handle, a.handle, b.handle)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, scale: Optional[float] = None, causal: bool = False) -> Tensor:
    """Scaled dot-product attention on the host."""
    return _wrap(wit.attention, q.handle, k.handle, v.handle, mask.handle if mask else None, scale, causal)


def attention_varlen(q: Tensor, k: Tensor, v: Tensor, offsets: Sequence[int], scale: Optional[float] = None, causal: bool = False) -> Tensor:
    """Self-attention over sequences packed without padding: q, k ``[total, heads, d]``,
    v ``[total, heads, dv]``, sequence ``i`` being tokens ``offsets[i]:offsets[i + 1]``."""
    return _wrap(wit.attention_varlen, q.handle, k.handle, v.handle, [int(o) for o in offsets], scale, causal)


def lstm(x_gates: Tensor, r: Tensor, h0: Tensor, c0: Tensor, reverse: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """An LSTM layer over a whole sequence in one host call (contract 0.1.5):
    ONNX's ``LSTM`` for one direction, without peepholes or clipping.
    ``x_gates`` ``[steps, batch, 4 * hidden]`` is the input's product with every
    gate's weights plus the biases (one ``linear`` over all steps); ``r``
    ``[4 * hidden, hidden]``; ``h0``, ``c0`` ``[batch, hidden]``; gates in ONNX's
    i, o, f, g order, the last step first when ``reverse``. Returns ``(y, h, c)``:
    every step's h as ``[steps, batch, hidden]`` in time order, and the last
    step's h and c ``[batch, hidden]``."""
    y, h, c = _call(wit.lstm, x_gates.handle, r.handle, h0.handle, c0.handle, reverse)
    return Tensor(y), Tensor(h), Tensor(c)
