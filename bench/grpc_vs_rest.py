"""OIP over gRPC vs REST JSON vs REST binary (Triton's binary tensor
extension) on one edgeserve, for `digits` at batch 1 and 64.

    cargo build --release -p edgeserve
    python3 bench/grpc_vs_rest.py [--connections 4] [--rounds 6] [--seconds 2]

Each protocol gets the same load: `--connections` client threads, each with
its own connection (a keep-alive HTTP/1.1 connection; a gRPC channel), each
sending its next request as soon as the last answer arrived, for
`--seconds`. The protocols take turns, round after round (the order rotates),
so they see the same background load. Requests are encoded once up front and
answers are not decoded, so the client's codec work stays out of the
server's figures. Every answer is checked once against the others
(the same probabilities, bit for bit) before timing. Prints req/s (median
over rounds) and p50/p99 latency (over every request of every round).
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import harness  # noqa: E402  (sets OMP_WAIT_POLICY first)

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402

INFER = "/inference.GRPCInferenceService/ModelInfer"


def digits_batch(n):
    reference = json.loads((harness.REPO / "tests/data/digits_reference.json").read_text())
    pixels = np.asarray(reference["inputs"], dtype=np.float32)
    return np.resize(pixels, (n, 64))


def rest_json(pixels):
    body = {"inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32",
                        "data": pixels.ravel().tolist()}]}
    return json.dumps(body).encode(), {"content-type": "application/json"}


def rest_binary(pixels):
    raw = pixels.tobytes()
    head = json.dumps({
        "inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return head + raw, {"content-type": "application/octet-stream",
                        "inference-header-content-length": str(len(head))}


def grpc_request(pixels):
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP32", shape=list(pixels.shape))
    request.raw_input_contents.append(pixels.tobytes())
    return request.SerializeToString()


class RestCaller:
    def __init__(self, url, body, headers):
        self.client = harness.Client(url)
        self.body, self.headers = body, headers

    def __call__(self):
        conn = self.client.conn
        conn.request("POST", "/v2/models/digits/infer", self.body, self.headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            sys.exit(f"REST answered {response.status}: {data[:300]!r}")
        self.json_len = response.getheader("inference-header-content-length")
        return data


class GrpcCaller:
    def __init__(self, address, message):
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30)])
        # Bytes in, bytes out: no protobuf work in the timed loop.
        self.call = self.channel.unary_unary(INFER)
        self.message = message

    def __call__(self):
        return self.call(self.message)


def probabilities(protocol, caller):
    """The digits probabilities of one answer, to check the protocols agree."""
    answer = caller()
    if protocol == "grpc":
        response = service_pb2.ModelInferResponse.FromString(answer)
        names = [o.name for o in response.outputs]
        raw = response.raw_output_contents[names.index("probabilities")]
        return np.frombuffer(raw, dtype=np.float32)
    if protocol == "rest-binary":
        head_len = int(caller.json_len)
        head = json.loads(answer[:head_len])
        offset = 0
        for output in head["outputs"]:
            size = output["parameters"]["binary_data_size"]
            if output["name"] == "probabilities":
                return np.frombuffer(answer[head_len + offset:head_len + offset + size], dtype=np.float32)
            offset += size
    outputs = {o["name"]: o["data"] for o in json.loads(answer)["outputs"]}
    return np.asarray(outputs["probabilities"], dtype=np.float32)


def run_phase(callers, seconds):
    """Every caller in its own thread for `seconds`: (requests/s, latencies)."""
    stop = time.perf_counter() + seconds

    def loop(call):
        out = []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
        return out

    latencies, elapsed = harness.in_threads([lambda c=c: loop(c) for c in callers])
    flat = [x for out in latencies for x in out]
    return len(flat) / elapsed, flat

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="the server's compute threads")
    parser.add_argument("--batches", default="1,64")
    args = parser.parse_args()

    server = harness.Server(harness.find_binary(), harness.MODELS, ["digits"], args.threads, grpc=True)
    try:
        print(f"edgeserve digits, {args.connections} connections per protocol, {args.rounds} rounds "
              f"of {args.seconds:g} s each, protocols alternating; server compute threads {args.threads}")
        print(f"{'batch':>5}  {'protocol':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  vs REST JSON req/s")
        for n in map(int, args.batches.split(",")):
            pixels = digits_batch(n)
            make = {
                "grpc": lambda: GrpcCaller(server.grpc_address, grpc_request(pixels)),
                "rest-json": lambda: RestCaller(server.url, *rest_json(pixels)),
                "rest-binary": lambda: RestCaller(server.url, *rest_binary(pixels)),
            }
            callers = {p: [make[p]() for _ in range(args.connections)] for p in make}
            answers = {p: probabilities(p, callers[p][0]) for p in callers}
            for p, probs in answers.items():
                assert probs.tobytes() == answers["grpc"].tobytes(), f"{p} answers differ from gRPC"
            order = list(callers)
            rates = {p: [] for p in order}
            latencies = {p: [] for p in order}
            run_phase([c for cs in callers.values() for c in cs[:1]], 0.5)  # warm-up
            for r in range(args.rounds):
                for p in order[r % len(order):] + order[:r % len(order)]:
                    rate, lat = run_phase(callers[p], args.seconds)
                    rates[p].append(rate)
                    latencies[p].extend(lat)
            base = statistics.median(rates["rest-json"])
            for p in order:
                rate = statistics.median(rates[p])
                lat = np.asarray(latencies[p]) * 1000
                print(f"{n:>5}  {p:<12} {rate:>9.0f} {np.percentile(lat, 50):>8.2f} "
                      f"{np.percentile(lat, 99):>8.2f}  {rate / base:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
