#!/usr/bin/env python3
"""Trains the `digits` example model and writes its weights and test reference.

    pip install scikit-learn safetensors numpy
    python3 plugins/digits/train.py

An MLP (64 -> 64 -> 32 -> 10, ReLU, softmax) on scikit-learn's bundled 8x8
digits. Outputs:

* examples/models/digits/1/model.safetensors: FP32 weights in the PyTorch
  `Linear` layout, `fcN.weight` [out, in] and `fcN.bias` [out]. Training
  scales pixels by 1/16; that scaling is folded into `fc1.weight`, so the
  handler takes raw pixel values 0..16.
* tests/data/digits_reference.json: held-out samples (raw pixels) with
  scikit-learn's own `predict_proba` / `predict`, for the end-to-end tests.

Everything is seeded, so reruns give the same files.
"""

import json
import warnings
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "examples" / "models" / "digits" / "1" / "model.safetensors"
REFERENCE = REPO / "tests" / "data" / "digits_reference.json"
SEED = 0
PIXEL_SCALE = 16.0  # load_digits pixels are integers 0..16
N_REFERENCE = 30


def forward_f32(weights: dict, pixels: np.ndarray) -> np.ndarray:
    """The handler's computation, in float32 numpy, on raw pixels."""
    x = pixels.astype(np.float32)
    for i, layer in enumerate(("fc1", "fc2", "fc3")):
        x = x @ weights[f"{layer}.weight"].T + weights[f"{layer}.bias"]
        if i < 2:
            x = np.maximum(x, np.float32(0))
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    digits = load_digits()
    x_raw = digits.data.astype(np.float64)
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(
        x_raw, y, test_size=0.25, random_state=SEED, stratify=y
    )

    clf = MLPClassifier(
        hidden_layer_sizes=(64, 32),
        activation="relu",
        solver="adam",
        alpha=0.1,  # L2 keeps logits moderate, so float32 inference tracks float64 closely
        max_iter=2000,
        random_state=SEED,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(x_train / PIXEL_SCALE, y_train)
    assert list(clf.classes_) == list(range(10)), clf.classes_
    assert clf.out_activation_ == "softmax"

    train_acc = clf.score(x_train / PIXEL_SCALE, y_train)
    test_acc = clf.score(x_test / PIXEL_SCALE, y_test)
    print(f"trained in {clf.n_iter_} iterations, final loss {clf.loss_:.5f}")
    print(f"accuracy: train {train_acc:.4f}, test {test_acc:.4f} ({len(y_test)} held-out samples)")

    # sklearn coefs_ are [in, out]; store [out, in] like torch.nn.Linear.
    weights = {}
    for i, (coef, intercept) in enumerate(zip(clf.coefs_, clf.intercepts_), start=1):
        if i == 1:
            coef = coef / PIXEL_SCALE  # fold the input scaling into the first layer
        weights[f"fc{i}.weight"] = np.ascontiguousarray(coef.T, dtype=np.float32)
        weights[f"fc{i}.bias"] = np.ascontiguousarray(intercept, dtype=np.float32)
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        weights,
        str(WEIGHTS),
        # One metadata key only: safetensors writes a multi-key map in random
        # order, which would make reruns produce different bytes.
        metadata={
            "description": "digits MLP 64-64-32-10 relu/softmax; input raw 8x8 pixels 0..16 "
            "(1/16 folded into fc1.weight); fcN.weight [out, in], fcN.bias [out]",
        },
    )
    print(f"wrote {WEIGHTS.relative_to(REPO)} ({WEIGHTS.stat().st_size} bytes): "
          + ", ".join(f"{k} {list(v.shape)}" for k, v in weights.items()))

    # Self-check: a float32 forward pass of the exported file reproduces sklearn.
    exported = load_file(str(WEIGHTS))
    ours = forward_f32(exported, x_test)
    theirs = clf.predict_proba(x_test / PIXEL_SCALE)
    max_err = float(np.abs(ours.astype(np.float64) - theirs).max())
    same_labels = bool((ours.argmax(axis=1) == clf.predict(x_test / PIXEL_SCALE)).all())
    print(f"self-check on all {len(x_test)} test samples: float32 forward vs predict_proba "
          f"max |diff| {max_err:.2e}, labels identical: {same_labels}")
    assert max_err < 1e-6, max_err
    assert same_labels

    ref_x = x_test[:N_REFERENCE]
    reference = {
        "description": "held-out load_digits samples: raw pixels 0..16; sklearn "
        "MLPClassifier predict_proba / predict",
        "inputs": ref_x.astype(np.float32).tolist(),
        "probabilities": clf.predict_proba(ref_x / PIXEL_SCALE).tolist(),
        "labels": clf.predict(ref_x / PIXEL_SCALE).astype(int).tolist(),
        "targets": y_test[:N_REFERENCE].astype(int).tolist(),
    }
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(reference) + "\n")
    ref_acc = float(np.mean(np.array(reference["labels"]) == np.array(reference["targets"])))
    print(f"wrote {REFERENCE.relative_to(REPO)}: {N_REFERENCE} samples "
          f"(sklearn label matches target on {ref_acc:.0%})")


if __name__ == "__main__":
    main()
