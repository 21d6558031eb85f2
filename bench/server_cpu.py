"""Server CPU per `linear` request, two builds taking turns, each served
alone for its turn and driven by wrk for 5 s. CPU is the server process's
user + system time over the turn, from /proc, so the load generator's share
is not in it: this resolves per-request costs that throughput on a 2-core
machine shared with the client blurs. Requests (`--request`):

- `binary` (default): 1Mi floats in the binary extension (4 MiB in, 4 MiB
  out, the data unaligned in the body as sent; `harness.binary_linear`),
  `wrk -t1 -c2`;
- `json`: edgeserve-bench's JSON request (`[4, 1]`), `wrk -t1 -c16`.

    python3 bench/server_cpu.py --a BINARY_A --b BINARY_B [--request json] [--pairs 3]

Needs wrk (apt-get install wrk) and examples/models with the linear plugin
(scripts/build-plugins.sh).
"""

import argparse
import os
import pathlib
import shutil
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


def turn(binary, script, connections):
    server = harness.Server(binary, harness.MODELS, ["linear"], threads=2)
    try:
        url = f"{server.url}/v2/models/linear/infer"
        wrk(script, url, 1, connections)
        before = cpu_seconds(server.proc.pid)
        requests, rate = wrk(script, url, 5, connections)
        return (cpu_seconds(server.proc.pid) - before) / requests, rate
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="baseline binary")
    parser.add_argument("--b", required=True, help="binary under test")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--request", choices=["binary", "json"], default="binary")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    if args.request == "binary":
        (body, headers), connections = harness.binary_linear(1 << 20), 2
    else:
        body = JSON_BODY.read_bytes()
        headers, connections = {"Content-Type": "application/json"}, 16
    with tempfile.TemporaryDirectory() as work:
        (pathlib.Path(work) / "body").write_bytes(body)
        script = pathlib.Path(work) / "request.lua"
        script.write_text(f'local f = io.open("{work}/body", "rb")\n'
                          'wrk.method = "POST"; wrk.body = f:read("*a"); f:close()\n'
                          + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
        print(f"load: {' '.join(pathlib.Path('/proc/loadavg').read_text().split()[:3])}")
        print(f"{args.request} requests, wrk -t1 -c{connections}")
        print("| build | server CPU per request | requests/s |")
        print("|---|---:|---:|")
        for _ in range(args.pairs):
            for binary in (args.a, args.b):
                cpu, rate = turn(binary, str(script), connections)
                print(f"| {binary} | {cpu * 1e6:.2f} µs | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
