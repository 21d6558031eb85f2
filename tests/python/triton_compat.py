"""Drives a running edgeserve with Triton's own HTTP client (tritonclient).

Usage: python3 triton_compat.py HOST:PORT REFERENCE_JSON

Checks health, server and model metadata, and `digits` inference in JSON and
in binary-tensor mode against scikit-learn's reference probabilities.
Exits non-zero with a message on the first mismatch.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main() -> None:
    url, reference_path = sys.argv[1], sys.argv[2]
    with open(reference_path) as f:
        reference = json.load(f)
    pixels = np.asarray(reference["inputs"], dtype=np.float32)
    expected = np.asarray(reference["probabilities"], dtype=np.float32)
    labels = np.asarray(reference["labels"], dtype=np.int64)

    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    server = client.get_server_metadata()
    assert server["name"] == "edgeserve", server
    assert "binary_tensor_data" in server["extensions"], server
    assert client.is_model_ready("digits"), "digits not ready"

    meta = client.get_model_metadata("digits")
    assert meta["name"] == "digits", meta
    assert {i["name"] for i in meta["inputs"]} == {"pixels"}, meta
    assert {o["name"] for o in meta["outputs"]} >= {"probabilities", "label"}, meta

    for binary in (False, True):
        inp = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
        inp.set_data_from_numpy(pixels, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
            httpclient.InferRequestedOutput("label", binary_data=binary),
        ]
        result = client.infer("digits", [inp], outputs=outputs, request_id=f"compat-{binary}")
        probs = result.as_numpy("probabilities")
        got_labels = result.as_numpy("label")
        assert probs.shape == expected.shape, (probs.shape, expected.shape)
        err = float(np.max(np.abs(probs - expected)))
        assert err <= 1e-5, f"binary={binary}: max |p - sklearn| = {err}"
        assert np.array_equal(got_labels, labels), f"binary={binary}: labels {got_labels} != {labels}"
        assert result.get_response()["id"] == f"compat-{binary}"
        print(f"tritonclient infer binary={binary}: max abs error vs sklearn {err:.2e}")

    try:
        client.get_model_metadata("no-such-model")
    except Exception as e:  # tritonclient raises InferenceServerException
        assert "no-such-model" in str(e), e
    else:
        raise AssertionError("unknown model did not fail")
    print("tritonclient compatibility: OK")


if __name__ == "__main__":
    main()
