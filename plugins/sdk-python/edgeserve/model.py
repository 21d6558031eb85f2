"""What the host knows about the model this instance serves."""

from typing import List, Optional

from wit_world.imports import model as wit

from .tensor import Tensor, _call


def weight(name: str) -> Tensor:
    """A weight from the model's safetensors file (a shared handle, not a copy)."""
    return Tensor(_call(wit.weight, name))


def weight_names() -> List[str]:
    """Names of every weight the model ships."""
    return list(wit.weight_names())


def parameter(key: str, default: Optional[str] = None) -> Optional[str]:
    """A ``[parameters]`` entry of the model's config.toml, or ``default``."""
    value = wit.parameter(key)
    return default if value is None else value


def asset(name: str) -> Optional[bytes]:
    """A small file shipped next to the model, by file name."""
    return wit.asset(name)
