#!/usr/bin/env python3
"""Writes the weights of the `linear` example model: y = 0.1 * x + 0.3.

    pip install safetensors numpy
    python3 plugins/linear/make_weights.py

Output: examples/models/linear/1/model.safetensors with
  weight: FP32 [1, 1] = 0.1   (x[n, 1] @ weight[1, 1])
  bias:   FP32 [1]    = 0.3
"""

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "examples" / "models" / "linear" / "1" / "model.safetensors"


def main() -> None:
    tensors = {
        "weight": np.array([[0.1]], dtype=np.float32),
        "bias": np.array([0.3], dtype=np.float32),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"description": "linear: y = 0.1 * x + 0.3"})

    # Self-check: read the file back and run the forward pass in float32.
    loaded = load_file(str(OUT))
    x = np.array([[0.0], [1.0], [2.0], [-3.0]], dtype=np.float32)
    y = x @ loaded["weight"] + loaded["bias"]
    expected = 0.1 * x.astype(np.float64) + 0.3
    err = float(np.abs(y - expected).max())
    assert err < 1e-6, err
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size} bytes)")
    print(f"self-check: x={x.ravel().tolist()} -> y={y.ravel().tolist()} (max |err| {err:.1e})")


if __name__ == "__main__":
    main()
