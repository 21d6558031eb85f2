"""Drives a running edgeserve with Triton's own gRPC client (tritonclient.grpc).

Usage: python3 grpc_compat.py GRPC_HOST:PORT HTTP_HOST:PORT REFERENCE_JSON MAX_BODY_BYTES

The server serves linear, digits, minilm and faulty (tests/models/faulty:
one instance, a 500 ms deadline, a 300 ms queue timeout). Checks health and
metadata; linear, digits and minilm answers equal to the REST answers
(tritonclient.http, binary outputs) bit for bit; a request and a response
over gRPC's 4 MiB default; each error status with a message naming the
problem; the repository extension; typed contents next to the raw contents
tritonclient sends; and the protocol label of the request counter.
Exits non-zero with a message on the first mismatch.
"""
import json
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


def expect_error(call, code, *words):
    """`call` fails with gRPC status `code` and a message holding `words`."""
    try:
        call()
    except InferenceServerException as e:
        assert e.status() == f"StatusCode.{code}", (code, e.status(), e.message())
        for word in words:
            assert word in e.message(), (code, word, e.message())
        print(f"{code}: {e.message()}")
        return
    raise AssertionError(f"expected {code}, the call succeeded")


def tensor(client, name, array, datatype):
    inp = client.InferInput(name, list(array.shape), datatype)
    if client is httpclient:
        inp.set_data_from_numpy(array, binary_data=True)
    else:
        inp.set_data_from_numpy(array)
    return inp


def both(g, h, model, name, array, datatype, outputs):
    """The outputs of one request over gRPC and over REST (binary)."""
    over_grpc = g.infer(model, [tensor(grpcclient, name, array, datatype)],
                        outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
    over_http = h.infer(model, [tensor(httpclient, name, array, datatype)],
                        outputs=[httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs])
    return [(over_grpc.as_numpy(o), over_http.as_numpy(o)) for o in outputs]


def assert_same_bits(pairs, what):
    for got, want in pairs:
        assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
        assert got.tobytes() == want.tobytes(), f"{what}: gRPC and REST answers differ"


def faulty(g, action, **kwargs):
    arr = np.array([action], dtype=np.int32)
    return g.infer("faulty", [tensor(grpcclient, "action", arr, "INT32")], **kwargs)


def wait_inflight(http_url, n):
    line = f"edgeserve_inflight_requests {n}\n"
    for _ in range(500):
        with urllib.request.urlopen(f"http://{http_url}/metrics") as r:
            if line in r.read().decode():
                return
        time.sleep(0.01)
    raise AssertionError(f"the server never reported {n} requests in flight")


def main() -> None:
    grpc_url, http_url, reference_path, max_body = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with open(reference_path) as f:
        reference = json.load(f)
    g = grpcclient.InferenceServerClient(url=grpc_url)
    h = httpclient.InferenceServerClient(url=http_url)

    # Health and metadata.
    assert g.is_server_live() and g.is_server_ready()
    assert g.is_model_ready("digits") and g.is_model_ready("digits", "1")
    server = g.get_server_metadata(as_json=True)
    assert server["name"] == "edgeserve", server
    meta = g.get_model_metadata("digits", as_json=True)
    assert meta["name"] == "digits" and meta["versions"] == ["1"], meta
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [("pixels", "FP32", ["-1", "64"])], meta
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "label"}, meta

    # linear, digits, minilm: bit for bit what REST answers.
    xs = np.array([[1.0], [2.0], [3.0], [-0.5]], dtype=np.float32)
    assert_same_bits(both(g, h, "linear", "x", xs, "FP32", ["y"]), "linear")
    pixels = np.asarray(reference["inputs"], dtype=np.float32)
    pairs = both(g, h, "digits", "pixels", pixels, "FP32", ["probabilities", "label"])
    assert_same_bits(pairs, "digits")
    probs, labels = pairs[0][0], pairs[1][0]
    err = float(np.max(np.abs(probs - np.asarray(reference["probabilities"], dtype=np.float32))))
    assert err <= 1e-5, f"digits: max |p - sklearn| = {err}"
    assert np.array_equal(labels, np.asarray(reference["labels"], dtype=np.int64))
    texts = np.array(["Café crème", "edge servers speak gRPC", ""], dtype=np.object_)
    pairs = both(g, h, "minilm", "text", texts, "BYTES", ["embedding", "input_ids"])
    assert_same_bits(pairs, "minilm")
    assert pairs[0][0].shape == (3, 384), pairs[0][0].shape
    print("linear, digits, minilm: gRPC answers equal REST's bit for bit")

    # Over gRPC's 4 MiB default, both ways, and over the server's limit.
    big = np.arange(1_500_000, dtype=np.float32).reshape(-1, 1) / 1000
    assert big.nbytes > 4 << 20
    assert_same_bits(both(g, h, "linear", "x", big, "FP32", ["y"]), "linear, 6 MB")
    too_big = np.zeros((max_body // 4 + 1024, 1), dtype=np.float32)
    expect_error(lambda: g.infer("linear", [tensor(grpcclient, "x", too_big, "FP32")]),
                 "RESOURCE_EXHAUSTED", str(max_body), "--max-body-bytes")

    # Each status, naming the problem.
    expect_error(lambda: g.infer("no-such-model", [tensor(grpcclient, "x", xs, "FP32")]),
                 "NOT_FOUND", "no-such-model")
    expect_error(lambda: g.infer("linear", [tensor(grpcclient, "x", xs, "FP32")], model_version="9"),
                 "NOT_FOUND", "linear", "9")
    expect_error(lambda: g.get_model_metadata("no-such-model"), "NOT_FOUND", "no-such-model")
    expect_error(lambda: g.infer("linear", [tensor(grpcclient, "x", xs.astype(np.int32), "INT32")]),
                 "INVALID_ARGUMENT", "'x'", "FP32", "INT32")
    expect_error(lambda: g.infer("linear", [tensor(grpcclient, "x", xs.reshape(2, 2), "FP32")]),
                 "INVALID_ARGUMENT", "shape")
    expect_error(lambda: faulty(g, 5), "INVALID_ARGUMENT", "faulty", "bad request on purpose")
    expect_error(lambda: faulty(g, 1), "INTERNAL", "faulty", "trapped")
    expect_error(lambda: faulty(g, 2), "DEADLINE_EXCEEDED", "faulty", "500 ms deadline")
    # Busy: one request holds the only instance; the next waits out the
    # queue timeout.
    holder = {}
    thread = threading.Thread(target=lambda: holder.update(
        result=_catch(lambda: faulty(g, 2))))
    thread.start()
    wait_inflight(http_url, 1)
    expect_error(lambda: faulty(g, 0), "UNAVAILABLE", "faulty", "busy")
    thread.join()
    assert "500 ms deadline" in str(holder["result"]), holder
    assert faulty(g, 0).as_numpy("echo").tolist() == [0]

    # The repository extension.
    index = g.get_model_repository_index(as_json=True)["models"]
    rows = {(m["name"], m.get("state")) for m in index}
    assert {("linear", "READY"), ("digits", "READY"), ("minilm", "READY"), ("faulty", "READY")} <= rows, index
    g.unload_model("linear")
    assert not g.is_model_ready("linear")
    expect_error(lambda: g.infer("linear", [tensor(grpcclient, "x", xs, "FP32")]),
                 "NOT_FOUND", "linear", "not loaded")
    index = g.get_model_repository_index(as_json=True)["models"]
    assert any(m["name"] == "linear" and m.get("state") == "UNAVAILABLE" for m in index), index
    g.load_model("linear")
    assert g.is_model_ready("linear")
    expect_error(lambda: g.load_model("no-such-model"), "NOT_FOUND", "no-such-model")
    print("repository: index, unload, load")

    # Raw contents (tritonclient's) and typed contents (a raw stub), alike.
    raw = g.infer("linear", [tensor(grpcclient, "x", xs, "FP32")])
    assert raw.get_response().raw_output_contents, "a raw request gets raw outputs"
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_url))
    request = service_pb2.ModelInferRequest(model_name="linear", id="typed-1")
    x = request.inputs.add(name="x", datatype="FP32", shape=list(xs.shape))
    x.contents.fp32_contents.extend(xs.ravel().tolist())
    typed = stub.ModelInfer(request)
    assert typed.id == "typed-1" and not typed.raw_output_contents, typed
    y = np.array(typed.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(typed.outputs[0].shape)
    assert y.tobytes() == raw.as_numpy("y").tobytes(), (y, raw.as_numpy("y"))
    request = service_pb2.ModelInferRequest(model_name="minilm")
    text = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    text.contents.bytes_contents.extend(t.encode() for t in texts)
    request.outputs.add(name="embedding")
    typed = stub.ModelInfer(request)
    assert [o.name for o in typed.outputs] == ["embedding"], typed.outputs
    emb = np.array(typed.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(3, 384)
    assert emb.tobytes() == pairs_embedding(g, texts).tobytes()
    try:
        bad = service_pb2.ModelInferRequest(model_name="linear")
        bad.inputs.add(name="x", datatype="FP32", shape=[3, 1]).contents.fp32_contents.extend([1.0])
        stub.ModelInfer(bad)
        raise AssertionError("a short fp32_contents was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "fp32_contents" in e.details(), e
    print("typed contents: equal to raw contents")

    with urllib.request.urlopen(f"http://{http_url}/metrics") as r:
        metrics = r.read().decode()
    assert 'protocol="grpc"' in metrics and 'protocol="http"' in metrics, "no protocol label"
    print("tritonclient.grpc compatibility: OK")


def pairs_embedding(g, texts):
    result = g.infer("minilm", [tensor(grpcclient, "text", texts, "BYTES")],
                     outputs=[grpcclient.InferRequestedOutput("embedding")])
    return result.as_numpy("embedding")


def _catch(call):
    try:
        return call()
    except InferenceServerException as e:
        return e


if __name__ == "__main__":
    main()
