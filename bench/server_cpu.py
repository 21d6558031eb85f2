"""Server CPU per `linear` request, two builds taking turns, each served
alone for its turn and driven by wrk for 5 s. CPU is the server process's
user + system time over the turn, from /proc, so the load generator's share
is not in it: this resolves per-request costs that throughput on a 2-core
machine shared with the client blurs. Requests (`--request`):

- `binary` (default): 1Mi floats in the binary extension (4 MiB in, 4 MiB
  out, the data unaligned in the body as sent; `harness.binary_linear`),
  `wrk -t1 -c2`;
- `json`: edgeserve-bench's JSON request (`[4, 1]`), `wrk -t1 -c16`.

With `--native`, the baseline is no edgeserve build but the native handler
of edgeserve-bench's HTTP measurement (`edgeserve-bench --serve-native`: the
same JSON work in a plain axum handler, no registry, pool or wasm), and `--b`
defaults to the built `edgeserve`: the HTTP path's cost against native per
request on the server's own CPU, which the in-process client of
`cargo run --release -p edgeserve-bench` shares the cores with.

    python3 bench/server_cpu.py --a BINARY_A --b BINARY_B [--request json] [--pairs 3]
    python3 bench/server_cpu.py --native [--b BINARY] [--pairs 3]

Needs wrk (apt-get install wrk) and the built linear plugin (the test
build's, or `cd plugins && cargo build --release --target wasm32-wasip2 -p
linear`); `--native` needs `cargo build --release -p edgeserve -p
edgeserve-bench`.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import harness

# The request of `cargo run --release -p edgeserve-bench` (bench/src/http.rs).
JSON_BODY = pathlib.Path(__file__).with_name("linear_request.json")


def cpu_seconds(pid):
    """User + system time of process `pid` so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(script, url, seconds, connections):
    """(requests, requests/s) of one wrk run; exits if any failed."""
    run = harness.wrk(url, script, seconds, threads=1, connections=connections)
    if run["errors"]:
        sys.exit(f"{url}: {run['errors']} requests failed")
    return run["requests"], run["rate"]


def measure(pid, url, script, connections):
    """(server CPU per request, requests/s) of 5 s of wrk after 1 s of warm-up."""
    wrk(script, url, 1, connections)
    before = cpu_seconds(pid)
    requests, rate = wrk(script, url, 5, connections)
    return (cpu_seconds(pid) - before) / requests, rate


def turn(binary, repository, script, connections):
    server = harness.Server(binary, repository, ["linear"], threads=2)
    try:
        return measure(server.proc.pid, f"{server.url}/v2/models/linear/infer", script, connections)
    finally:
        server.stop()


def native_turn(script, connections):
    """`turn` for the native handler (`edgeserve-bench --serve-native`)."""
    bench = harness.find_binary().with_name("edgeserve-bench")
    if not bench.is_file():
        sys.exit(f"no {bench}: run `cargo build --release -p edgeserve-bench` first")
    proc = subprocess.Popen([str(bench), "--serve-native"], stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        if not address:
            sys.exit(f"{bench} --serve-native exited with {proc.wait()}")
        return measure(proc.pid, f"http://{address}/v2/models/linear/infer", script, connections)
    finally:
        proc.terminate()
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    baseline = parser.add_mutually_exclusive_group(required=True)
    baseline.add_argument("--a", help="baseline binary")
    baseline.add_argument("--native", action="store_true",
                          help="the native handler as the baseline (JSON requests)")
    parser.add_argument("--b", help="binary under test (with --native: the built edgeserve by default)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--request", choices=["binary", "json"])
    args = parser.parse_args()
    if args.native:
        if args.request == "binary":
            parser.error("the native handler takes JSON requests only")
        args.request, args.b = "json", args.b or str(harness.find_binary())
    elif not args.b:
        parser.error("--b is required with --a")
    args.request = args.request or "binary"
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    if args.request == "binary":
        (body, headers), connections = harness.binary_linear(1 << 20), 2
    else:
        body = JSON_BODY.read_bytes()
        headers, connections = {"Content-Type": "application/json"}, 16
    with tempfile.TemporaryDirectory() as work:
        (pathlib.Path(work) / "body").write_bytes(body)
        repository = pathlib.Path(work) / "repository"
        harness.model_folder("linear", repository / "linear")
        script = pathlib.Path(work) / "request.lua"
        script.write_text(f'local f = io.open("{work}/body", "rb")\n'
                          'wrk.method = "POST"; wrk.body = f:read("*a"); f:close()\n'
                          + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
        print(f"load: {' '.join(pathlib.Path('/proc/loadavg').read_text().split()[:3])}")
        print(f"{args.request} requests, wrk -t1 -c{connections}")
        print("| build | server CPU per request | requests/s |")
        print("|---|---:|---:|")
        def edgeserve(binary):
            return binary, lambda: turn(binary, repository, str(script), connections)

        baseline = (("native handler", lambda: native_turn(str(script), connections))
                    if args.native else edgeserve(args.a))
        sides = [baseline, edgeserve(args.b)]
        ratios = []
        for _ in range(args.pairs):
            pair = []
            for name, run in sides:
                cpu, rate = run()
                pair.append(cpu)
                print(f"| {name} | {cpu * 1e6:.2f} µs | {rate:.1f} |", flush=True)
            ratios.append(pair[1] / pair[0])
        print(f"\nCPU per request, {args.b} ÷ {sides[0][0]}, pair by pair: "
              + ", ".join(f"{r:.3f}" for r in ratios))


if __name__ == "__main__":
    main()
