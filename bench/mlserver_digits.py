#!/usr/bin/env python3
"""edgeserve against Seldon MLServer serving the same digits MLP, under
wrk load (16 keep-alive connections), the servers taking turns.

MLServer runs its scikit-learn runtime (`mlserver-sklearn`) on an
`MLPClassifier` whose coefficients are the shipped digits weights
(examples/models/digits/1/model.safetensors, written by
plugins/digits/train.py), so both servers compute the same probabilities;
the script checks that they agree before timing. MLServer answers
`predict_proba`; edgeserve answers its default outputs (`probabilities`
and `label`), a little more work. Each MLServer configuration in
`--workers` (its `parallel_workers`: 0 runs inference in the server
process) is measured and the best one is compared.

Needs `wrk` (Debian package), the built `edgeserve` and digits component,
and MLServer in a virtual environment of its own (it pins its own
dependencies). The script itself needs scikit-learn (for the reference
answers) and safetensors, so run it with that environment's Python:

    python3 -m venv /tmp/mlserver && /tmp/mlserver/bin/pip install \\
        mlserver==1.7.1 mlserver-sklearn==1.7.1 safetensors
    cargo build --release -p edgeserve
    (cd plugins && cargo build --release --target wasm32-wasip2 -p digits)
    /tmp/mlserver/bin/python bench/mlserver_digits.py --mlserver /tmp/mlserver/bin/mlserver \\
        [--images 64] [--rounds 3] [--seconds 5] [--workers 0]

Prints a Markdown table of requests/s and latency per side.
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import harness  # noqa: E402

import numpy as np  # noqa: E402

CONNECTIONS = 16
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


# Builds the classifier from the weights: run by this script's Python for
# the reference, and by MLServer's (its own scikit-learn) for the pickle it
# serves.
CLASSIFIER = """
import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import LabelBinarizer

def classifier(w):
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu")
    clf.coefs_ = [w[f"fc{i}.weight"].T.astype(np.float64) for i in (1, 2, 3)]
    clf.intercepts_ = [w[f"fc{i}.bias"].astype(np.float64) for i in (1, 2, 3)]
    clf.n_layers_, clf.n_outputs_, clf.out_activation_ = 4, 10, "softmax"
    clf.n_features_in_ = 64
    clf.classes_ = np.arange(10)
    clf._label_binarizer = LabelBinarizer().fit(np.arange(10))
    return clf
"""


def weights():
    from safetensors.numpy import load_file

    return load_file(str(harness.MODELS / "digits" / "1" / "model.safetensors"))


def classifier():
    """An sklearn MLPClassifier carrying the shipped digits weights."""
    scope = {}
    exec(CLASSIFIER, scope)
    return scope["classifier"](weights())


def images(n):
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)
    return np.resize(x, (n, 64))


class MLServer:
    """`mlserver start` over a folder holding the model, on free ports."""

    def __init__(self, executable, folder, workers, timeout=120):
        self.port = harness.free_port()
        settings = {
            "http_port": self.port,
            "grpc_port": harness.free_port(),
            "metrics_port": harness.free_port(),
            "parallel_workers": workers,
            "debug": False,
        }
        (folder / "settings.json").write_text(json.dumps(settings))
        self.log = open(folder / "mlserver.log", "wb")
        self.proc = subprocess.Popen([str(executable), "start", str(folder)], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=folder)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"mlserver exited with {self.proc.returncode}; log: {folder / 'mlserver.log'}")
            try:
                if harness.get(self.url, "/v2/models/digits/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        sys.exit(f"mlserver not ready in {timeout} s; log: {folder / 'mlserver.log'}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def model_folder(root, python):
    """A model folder for MLServer, its pickle written by MLServer's own
    `python` (so its scikit-learn reads it)."""
    folder = root / "digits"
    folder.mkdir(parents=True)
    np.savez(folder / "weights.npz", **weights())
    dump = CLASSIFIER + (
        "import joblib, sys\n"
        "w = dict(np.load(sys.argv[1]))\n"
        "joblib.dump(classifier(w), sys.argv[2])\n"
    )
    subprocess.run([str(python), "-c", dump, str(folder / "weights.npz"), str(folder / "model.joblib")],
                   check=True)
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "digits",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }))
    return root


def wrk(url, body_file, seconds, script):
    """(requests/s, p50 ms, p99 ms, non-2xx + socket errors) of one wrk run."""
    run = harness.wrk(f"{url}/v2/models/digits/infer", script, seconds, threads=2, connections=CONNECTIONS,
                      env={"BENCH_BODY": str(body_file)})
    return run["rate"], run["p50"], run["p99"], run["errors"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlserver", required=True, help="the `mlserver` executable of its venv")
    parser.add_argument("--edgeserve", action="append", default=[],
                        help="LABEL=BINARY of an edgeserve build to measure (repeatable; "
                             "default: the release build, labelled edgeserve)")
    parser.add_argument("--images", type=int, default=64, help="images per request")
    parser.add_argument("--rounds", type=int, default=3, help="turns each server takes")
    parser.add_argument("--seconds", type=int, default=5, help="seconds of load per turn")
    parser.add_argument("--threads", type=int, default=2, help="edgeserve compute threads")
    parser.add_argument("--workers", default="0", help="MLServer parallel_workers settings to try")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install wrk")

    clf = classifier()
    x = images(args.images)
    reference = clf.predict_proba(x)
    shape = [args.images, 64]
    data = x.ravel().tolist()
    ours = {"inputs": [{"name": "pixels", "shape": shape, "datatype": "FP32", "data": data}]}
    theirs = {"inputs": [{"name": "pixels", "shape": shape, "datatype": "FP32", "data": data}],
              "outputs": [{"name": "predict_proba"}]}

    builds = [spec.split("=", 1) for spec in args.edgeserve] or [("edgeserve", str(harness.find_binary()))]
    with tempfile.TemporaryDirectory(prefix="mlserver-digits-") as tmp:
        tmp = pathlib.Path(tmp)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        bodies = {}
        for name, body in (("ours", ours), ("theirs", theirs)):
            bodies[name] = tmp / f"{name}.json"
            bodies[name].write_text(json.dumps(body))
        # Only the digits model: a repository of its own.
        repo = tmp / "models"
        shutil.copytree(harness.MODELS / "digits", repo / "digits")
        shutil.copy(harness.find_plugin("digits"), repo / "digits" / "1" / "model.wasm")

        sides = []
        try:
            for label, binary in builds:
                server = harness.Server(pathlib.Path(binary), repo, ["digits"], args.threads)
                out = harness.Client(server.url).infer("digits", ours)["probabilities"]
                sides.append((label, server, bodies["ours"], np.abs(np.array(out).reshape(reference.shape) - reference).max()))
            for workers in (int(w) for w in args.workers.split(",")):
                python = pathlib.Path(args.mlserver).parent / "python"
                server = MLServer(args.mlserver, model_folder(tmp / f"ml{workers}", python), workers)
                response = harness.Client(server.url)
                response.conn.request("POST", "/v2/models/digits/infer", bodies["theirs"].read_bytes(),
                                      {"content-type": "application/json"})
                answer = json.loads(response.conn.getresponse().read())
                out = next(o["data"] for o in answer["outputs"] if o["name"] == "predict_proba")
                sides.append((f"MLServer sklearn, parallel_workers={workers}", server, bodies["theirs"],
                              np.abs(np.array(out).reshape(reference.shape) - reference).max()))
            for _, server, body, _ in sides:  # warm-up
                wrk(server.url, body, 1, script)
            results = {label: [] for label, *_ in sides}
            for r in range(args.rounds):
                order = sides if r % 2 == 0 else sides[::-1]
                for label, server, body, _ in order:
                    results[label].append(wrk(server.url, body, args.seconds, script))
        finally:
            for _, server, _, _ in sides:
                server.stop()

    best_ml = max((label for label, *_ in sides if label.startswith("MLServer")),
                  key=lambda label: sum(r[0] for r in results[label]))
    print(f"`python3 bench/mlserver_digits.py --images {args.images} --rounds {args.rounds} "
          f"--seconds {args.seconds} --workers {args.workers}`: {args.images} images per request, "
          f"wrk -t2 -c{CONNECTIONS}, {args.rounds} turns of {args.seconds} s per server, alternating\n")
    print("| Server | req/s (mean of turns) | images/s | p50 | p99 | errors | max abs Δp vs sklearn | req/s vs best MLServer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = np.mean([r[0] for r in results[best_ml]])
    for label, _, _, diff in sides:
        runs = results[label]
        rate = np.mean([r[0] for r in runs])
        print(f"| {label} | {rate:.0f} | {rate * args.images:.0f} | {np.median([r[1] for r in runs]):.2f} ms | "
              f"{np.median([r[2] for r in runs]):.2f} ms | {sum(r[3] for r in runs)} | {diff:.1e} | {rate / base:.2f}× |")


if __name__ == "__main__":
    main()
