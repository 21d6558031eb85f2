"""Layers built from the model's weights, mirroring the Rust SDK's ``nn``."""

from typing import Optional

from . import model
from .tensor import Tensor, TensorError, UNARY


def _name(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


class Linear:
    """``activation(x · Wᵀ + b)``, one host pass.

    ``layout="out_in"`` reads ``W`` as PyTorch's ``nn.Linear`` stores it
    (``[out, in]``); ``"in_out"`` as a plain ``x · W`` matrix.
    """

    def __init__(self, weight: Tensor, bias: Tensor, layout: str = "out_in", activation: Optional[str] = None):
        if layout not in ("out_in", "in_out"):
            raise ValueError(f"layout must be 'out_in' or 'in_out', not {layout!r}")
        rows, cols = weight.shape
        out = rows if layout == "out_in" else cols
        if bias.shape != [out]:
            raise TensorError("shape", f"bias is {bias.shape}, not [{out}] for weight {[rows, cols]} as {layout}")
        self.weight = weight
        self.bias = bias
        self.transpose_b = layout == "out_in"
        self.activation = UNARY[activation.upper()] if activation else None

    @classmethod
    def load(cls, prefix: str, layout: str = "out_in", activation: Optional[str] = None) -> "Linear":
        """The layer of weights ``{prefix}.weight`` and ``{prefix}.bias``."""
        return cls(model.weight(_name(prefix, "weight")), model.weight(_name(prefix, "bias")), layout, activation)

    def __call__(self, x: Tensor) -> Tensor:
        return x.linear(self.weight, self.bias, transpose_b=self.transpose_b, activation=self.activation)


class LayerNorm:
    """Layer normalization with the model's ``{prefix}.weight``/``.bias``."""

    def __init__(self, gamma: Tensor, beta: Tensor, eps: float = 1e-5):
        self.gamma, self.beta, self.eps = gamma, beta, eps

    @classmethod
    def load(cls, prefix: str, eps: float = 1e-5) -> "LayerNorm":
        return cls(model.weight(_name(prefix, "weight")), model.weight(_name(prefix, "bias")), eps)

    def __call__(self, x: Tensor) -> Tensor:
        return x.layer_norm(self.gamma, self.beta, self.eps)
