"""What the bench scripts share: starting `edgeserve serve` (the release
binary) on a free port and waiting until its models are ready, a keep-alive
OIP client, and timing two sides turn by turn.

Import it before anything that loads torch or an OpenMP runtime: it sets
OMP_WAIT_POLICY, which only takes effect if set before then.
"""

import http.client
import json
import math
import os
import pathlib
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

# PyTorch's OpenMP threads (libgomp) spin between ops by default; on a shared,
# oversubscribed 2-core machine that made its latencies swing 10x from run to
# run (gpt2 generate p50 59 to 504 ms, minilm batch-32 60 to 791 ms). Passive
# waiting keeps the reference steady; export OMP_WAIT_POLICY=ACTIVE to undo.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary():
    """The release `edgeserve` under $CARGO_TARGET_DIR or target/."""
    candidates = [os.environ.get("CARGO_TARGET_DIR", ""), str(REPO / "target")]
    for base in filter(None, candidates):
        path = pathlib.Path(base) / "release" / "edgeserve"
        if path.is_file():
            return path
    sys.exit("no edgeserve binary: run `cargo build --release -p edgeserve` first")


def link_model_files(model, folder, skip=()):
    """Links the files of examples/models/<model> itself (config.toml and
    those it names, such as its warm-up request), all but `skip`, into
    `folder`, the model's folder in a bench's own repository."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in (MODELS / model).iterdir():
        if f.is_file() and f.name not in skip:
            (folder / f.name).symlink_to(f.resolve())


def model_folder(model, folder, skip=()):
    """examples/models/<model> as `folder` of a bench's own repository: its
    own files linked (all but `skip`), and version 1 with the freshly built
    plugin as model.wasm and the rest of the shipped version linked."""
    link_model_files(model, folder, skip)
    version = folder / "1"
    version.mkdir()
    shutil.copy(find_plugin(model), version / "model.wasm")
    for f in (MODELS / model / "1").iterdir():
        if f.name != "model.wasm":
            (version / f.name).symlink_to(f.resolve())


def find_plugin(name):
    """The built component `<name>.wasm` under plugins/target or the test
    build's `wasm-plugins` (in $CARGO_TARGET_DIR, or in target/ where that
    is unset), whichever was built last: a stale build must not be benched."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    bases = [REPO / "plugins" / "target", target / "wasm-plugins", REPO / "target" / "wasm-plugins"]
    built = [p for p in (b / "wasm32-wasip2" / "release" / f"{name}.wasm" for b in bases) if p.is_file()]
    if not built:
        sys.exit(f"no {name}.wasm: run `cd plugins && cargo build --release --target wasm32-wasip2 -p {name}`")
    return max(built, key=lambda p: p.stat().st_mtime)


def binary_linear(n):
    """`linear` on n floats over the binary extension, both ways, as
    (body, headers). The request id pads the JSON header to one byte past a
    multiple of 4, so the data lies unaligned for FP32 in the body as sent,
    as it does for most clients' headers."""
    def head(request_id):
        return json.dumps({"id": request_id,
                           "inputs": [{"name": "x", "shape": [n, 1], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 4 * n}}],
                           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    json_part = head("")
    json_part = head("x" * ((1 - len(json_part)) % 4))
    data = struct.pack(f"<{n}f", *(float(i % 251) for i in range(n)))
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(json_part))}
    return json_part + data, headers


def get(url, path):
    """`GET path` on a fresh connection: (status, body bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def histogram(url, metric, model):
    """(sum, count) of the server's histogram `edgeserve_<metric>` for
    `model`, added up over its other labels."""
    text = get(url, "/metrics")[1].decode()
    found = {}
    for part in ("sum", "count"):
        pattern = rf'^edgeserve_{metric}_{part}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$'
        found[part] = sum(float(m) for m in re.findall(pattern, text, re.M))
    return found["sum"], found["count"]


class Server:
    """`edgeserve serve` over `repository` on a free port, with `threads`
    compute threads (RAYON_NUM_THREADS, which edgeserve reads as its
    `--compute-threads`: a request's own thread and `threads - 1` pool
    workers, as ONNX Runtime counts its intra-op threads), logging to a
    temporary file (removed by `stop`). Exits the script, naming the log,
    when the server dies or a model fails to load or is not ready within
    `timeout` seconds. gRPC is off unless `grpc`; then it listens on a free
    port too, `grpc_address` (HOST:PORT). `env` adds to its environment."""

    def __init__(self, binary, repository, models, threads, device="cpu", timeout=300, grpc=False, env=None):
        port = free_port()
        # Off by default: its fixed default port would collide between
        # servers. Set in the environment, which builds from before gRPC
        # (bench/ab_builds.py) ignore.
        grpc_port = free_port() if grpc else 0
        self.grpc_address = f"127.0.0.1:{grpc_port}" if grpc else None
        self.log = tempfile.NamedTemporaryFile(
            prefix=f"edgeserve-bench-{device}-", suffix=".log", delete=False).name
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads), RUST_LOG="warn",
                   EDGESERVE_GRPC_PORT=str(grpc_port), **(env or {}))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(binary), "serve", "--model-repository", str(repository), "--http-port", str(port),
                 "--device", device],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        what = f"edgeserve --device {device}"
        deadline = time.time() + timeout
        pending = list(models)
        while pending and time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{what} exited with {self.proc.returncode}; log: {self.log}\n{self.log_tail()}")
            if "not serving" in self.log_text():
                self.proc.terminate()
                sys.exit(f"{what} failed to load a model (stale binary or plugins?):\n{self.log_tail()}")
            try:
                if get(self.url, f"/v2/models/{pending[0]}/ready")[0] == 200:
                    pending.pop(0)
                    continue
            except OSError:
                pass
            time.sleep(0.2)
        if pending:
            self.proc.terminate()
            sys.exit(f"{what}: {pending} not ready in {timeout} s; log: {self.log}")

    def log_text(self):
        return pathlib.Path(self.log).read_text()

    def log_tail(self):
        return self.log_text()[-3000:]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        os.unlink(self.log)


class Client:
    """One keep-alive connection to an edgeserve at `url`."""

    def __init__(self, url, timeout=600):
        u = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)

    def post(self, model, raw, headers=None):
        """The timed path: a pre-encoded body in, the response's bytes out
        (the client's JSON work is not the server's). `headers` replace the
        JSON content type (the binary extension's, for one)."""
        self.conn.request("POST", f"/v2/models/{model}/infer", raw, headers or {"content-type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            sys.exit(f"edgeserve {model} answered {response.status}: {data[:500]!r}")
        return data

    def infer(self, model, body):
        """OIP inference: a request body (JSON-able) in, {output name: data} out."""
        data = self.post(model, json.dumps(body).encode())
        return {o["name"]: o["data"] for o in json.loads(data)["outputs"]}


def wrk(url, script, seconds, threads, connections, env=None):
    """One run of wrk (`--latency`, the Lua `script`) against `url`:
    {requests, rate (req/s), p50 and p99 (ms), errors (non-2xx and socket
    errors)}. `env` adds to the environment (for the script to read)."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        env=dict(os.environ, **(env or {})), capture_output=True, text=True, check=True,
    ).stdout

    def percentile(p):
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {
        "requests": int(re.search(r"(\d+) requests in", out)[1]),
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50": percentile(50),
        "p99": percentile(99),
        "errors": errors,
    }


def timed(fns, repeats, warmup):
    """Times each of `fns` `repeats` times, taking turns, so that both sides
    see the same background load on a shared machine. Each turn starts one
    side later than the last, so every side follows every other equally
    often: the side that always ran right after onnxruntime read 2-6% slower
    than an identical one by position alone (bench/RESULTS.md, session 49)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for turn in range(repeats):
        for k in range(len(fns)):
            i = (turn + k) % len(fns)
            start = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - start)
    return times


def ort_session(model, threads, profile_prefix=None):
    """An ONNX Runtime session on the CPU as every baseline here runs it:
    `threads` intra-op threads, spinning off (a server shares its cores), one
    inter-op thread. `model`: a path or the serialized model; with
    `profile_prefix`, ONNX Runtime's profiler writes there."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def paired_ratio(baseline, ours):
    """The median of the per-turn ratios baseline[i] / ours[i] of two
    series `timed` took in turns, with its 95% confidence interval
    (distribution-free, from the order statistics): (median, low, high).
    Pairing cancels the machine's drift, which moves both sides of a turn
    alike, so this resolves a difference that the ratio of the two medians
    hides in noise."""
    ratios = sorted(b / o for b, o in zip(baseline, ours))
    n = len(ratios)
    half = 1.96 * n ** 0.5 / 2
    low, high = max(math.floor(n / 2 - half), 0), min(math.ceil(n / 2 + half), n - 1)
    return statistics.median(ratios), ratios[low], ratios[high]


def in_threads(fns):
    """Calls every one of `fns` in its own thread, all started together:
    (their results in order, wall seconds until the last one returned)."""
    results = [None] * len(fns)

    def run(i):
        results[i] = fns[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start
