"""`digits` written three times, in Rust, Python and JavaScript, on the same
weights: the math is on the host, so the three should be close.

Reports, per implementation: p50 latency of one image and of a batch of 64
(alternating turns), the component's size, its first load (compile +
instances started) with an empty compile cache, and its load from the warm
compile cache (instance start).

    cargo build --release -p edgeserve && cargo test --release -p edgeserve-e2e --no-run
    python3 bench/digits_languages.py [--repeats 200]

The Python and JavaScript components are built with `edgeserve build` from
plugins/digits-py and plugins/digits-js; the Rust one is the plugin the
test build compiled ($CARGO_TARGET_DIR/wasm-plugins).
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from harness import MODELS, REPO, Client, Server, find_binary, get, timed

IMPLEMENTATIONS = ["digits", "digits-py", "digits-js"]


def rust_component(binary):
    target = binary.parents[1]
    wasm = target / "wasm-plugins" / "wasm32-wasip2" / "release" / "digits.wasm"
    if not wasm.is_file():
        sys.exit(f"no {wasm}: run `cargo test --release -p edgeserve-e2e --no-run` first")
    return wasm


def build_repository(binary, root):
    """A repository of the three, each with one instance, in `root`."""
    repo = root / "models"
    for name in IMPLEMENTATIONS[1:]:
        subprocess.run([str(binary), "build", str(REPO / "plugins" / name), "--repository", str(repo)],
                       check=True, stdout=subprocess.DEVNULL)
    (repo / "digits" / "1").mkdir(parents=True)
    shutil.copy(rust_component(binary), repo / "digits" / "1" / "model.wasm")
    shutil.copy(MODELS / "digits" / "1" / "model.safetensors", repo / "digits" / "1")
    for name in IMPLEMENTATIONS:
        (repo / name / "config.toml").write_text("instances = 1\nmemory_limit_mib = 128\ntimeout_ms = 10000\n")
    return repo


def load_times(binary, repo, cache):
    """Seconds for POST .../load of each model on a server that starts with
    none (the models are moved aside, then back), with `cache` as its
    compile cache."""
    held = repo.parent / "held"
    shutil.rmtree(held, ignore_errors=True)
    repo.rename(held)
    repo.mkdir()
    os.environ["EDGESERVE_CACHE_DIR"] = str(cache)
    server = Server(binary, repo, [], threads=2)
    try:
        for _ in range(300):
            try:
                if get(server.url, "/v2/health/live")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        out = {}
        for name in IMPLEMENTATIONS:
            (held / name).rename(repo / name)
            client = Client(server.url)
            start = time.perf_counter()
            client.conn.request("POST", f"/v2/repository/models/{name}/load", b"{}",
                                {"content-type": "application/json"})
            response = client.conn.getresponse()
            body = response.read()
            out[name] = time.perf_counter() - start
            if response.status != 200:
                sys.exit(f"loading {name}: {response.status} {body[:300]!r}")
        return out
    finally:
        server.stop()
        held.rmdir()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    binary = find_binary()
    data = json.loads((REPO / "tests" / "data" / "digits_last300.json").read_text())["inputs"]
    with tempfile.TemporaryDirectory(prefix="edgeserve-bench-digits-") as tmp:
        root = pathlib.Path(tmp)
        repo = build_repository(binary, root)
        sizes = {n: (repo / n / "1" / "model.wasm").stat().st_size for n in IMPLEMENTATIONS}
        cache = root / "cache"
        first = load_times(binary, repo, cache)
        warm = load_times(binary, repo, cache)
        server = Server(binary, repo, IMPLEMENTATIONS, threads=2)
        try:
            client = Client(server.url)
            rows = {}
            for batch in (1, 64):
                body = json.dumps({"inputs": [{"name": "pixels", "shape": [batch, 64], "datatype": "FP32",
                                               "data": [v for image in data[:batch] for v in image]}]}).encode()
                fns = [lambda n=n: client.post(n, body) for n in IMPLEMENTATIONS]
                times = timed(fns, args.repeats, warmup=10)
                for name, t in zip(IMPLEMENTATIONS, times):
                    rows.setdefault(name, {})[batch] = statistics.median(t) * 1e3
        finally:
            server.stop()
    print(f"digits in three languages, {args.repeats} alternating turns, CPU backend, 2 threads, 1 instance each")
    print("| implementation | p50 1 image (ms) | p50 64 images (ms) | component (MiB) | first load, empty cache (s) | load, warm cache (s) |")
    print("|---|---|---|---|---|---|")
    for name in IMPLEMENTATIONS:
        lang = {"digits": "Rust", "digits-py": "Python", "digits-js": "JavaScript"}[name]
        print(f"| {name} ({lang}) | {rows[name][1]:.3f} | {rows[name][64]:.3f} | {sizes[name] / 2**20:.1f} "
              f"| {first[name]:.2f} | {warm[name]:.3f} |")


if __name__ == "__main__":
    main()
