"""Dynamic batching: 16 concurrent clients, each sending batch-1 requests
back to back, against `minilm` and `digits` with their shipped `[batching]`
config ("on") and with `max_batch_size = 1` ("off"), the latter at the
shipped instance count and at each of `--off-instances` (1 to 4 by
default), all served side by side by one server and measured in
alternating rounds. A batching model wants few instances (one batch at a
time takes the cores) and an unbatched one more, so "on" is rated against
the fastest "off" as well as against the shipped config's.

    export CARGO_TARGET_DIR=$HOME/.cache/edgeserve-target
    cargo build --release -p edgeserve   # and the plugins (the test build makes them)
    python3 bench/batching.py [--clients 16] [--rounds 3] [--client wrk|python]

The clients are `wrk` (the default: one thread, `--clients` keep-alive
connections, each sending the next request as soon as its answer is in,
the request bodies taken in turn) or as many Python threads (`--client
python`, what the runs in RESULTS.md before session 43 used). The Python
clients share the two cores with the server and take more of them the more
requests it serves, so they hide part of what batching saves: on the same
builds, session 43 read minilm's on/off at 1.65–1.82× under them against
1.81–2.00× under wrk.

Prints requests/s and p50/p99 latency per model and side with its
instances, the on/off ratios, and the mean batch size the server reports
(`edgeserve_batch_size`). Under wrk the latencies are the median over the
rounds of each round's percentile. The components come from the test build
($CARGO_TARGET_DIR/wasm-plugins), not the git-ignored copies in
examples/models, which may be stale.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import tempfile
import time

import harness

SENTENCES = [
    "edge inference",
    "A man is playing a guitar on a small stage in the rain.",
    "The quick brown fox jumps over the lazy dog.",
    "Sandboxed handlers run their tensor math on host kernels.",
    "Café crème",
    "How far is the nearest train station from here?",
    "Batching turns many small matrix products into a few large ones.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
]


def bodies(model):
    """Batch-1 request bodies, pre-encoded; several distinct ones per model."""
    if model == "minilm":
        # The embedding alone, as the runs recorded in RESULTS.md did (a
        # request for the token ids batches too).
        return [json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [s]}],
                            "outputs": [{"name": "embedding"}]}).encode() for s in SENTENCES]
    return [json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                    "data": [float((i * 7 + k * 13) % 17) for i in range(64)]}]}).encode()
            for k in range(8)]


def repository(work, off_instances):
    """`<m>` with the shipped config, `<m>_off` with max_batch_size = 1, and
    `<m>_off<n>` with max_batch_size = 1 and `instances = n` for each n of
    `off_instances` other than the shipped count: batching off as it might
    be served instead. (repository, {model: {side: its instances}})"""
    repo = work / "repo"
    sides = {}
    for model in ("minilm", "digits"):
        config = (harness.MODELS / model / "config.toml").read_text()
        if not re.search(r"^max_batch_size = \d+$", config, re.M):
            raise SystemExit(f"examples/models/{model}/config.toml has no [batching] max_batch_size")
        shipped = re.search(r"^instances = (\d+)$", config, re.M)
        if not shipped:
            raise SystemExit(f"examples/models/{model}/config.toml sets no instances")
        shipped = int(shipped[1])
        off = re.sub(r"^max_batch_size = \d+$", "max_batch_size = 1", config, flags=re.M)
        sides[model] = {model: shipped, f"{model}_off": shipped,
                        **{f"{model}_off{n}": n for n in off_instances if n != shipped}}
        for name, n in sides[model].items():
            text = config if name == model else re.sub(r"^instances = \d+$", f"instances = {n}", off, flags=re.M)
            harness.model_folder(model, repo / name, skip=("config.toml",))
            (repo / name / "config.toml").write_text(text)
    return repo, sides


def round_of(server, model, requests, clients):
    """`clients` threads, each on its own connection sending `requests`
    batch-1 requests back to back: (latencies, wall seconds)."""
    payloads = bodies_of(model)
    conns = [harness.Client(server.url) for _ in range(clients)]

    def client(c):
        def run():
            out = []
            for r in range(requests):
                body = payloads[(c * 3 + r) % len(payloads)]
                start = time.perf_counter()
                conns[c].post(model, body)
                out.append(time.perf_counter() - start)
            return out
        return run

    results, wall = harness.in_threads([client(c) for c in range(clients)])
    return [t for r in results for t in r], wall


# wrk's request generator: the bodies of `BODIES` (a file, separated by
# \x01) in turn, one connection's requests continuing where another's
# left off.
ROTATE = """
local bodies = {}
local f = assert(io.open(os.getenv("BODIES"), "rb"))
for body in string.gmatch(f:read("*a"), "[^\\1]+") do table.insert(bodies, body) end
f:close()
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i % #bodies + 1])
end
"""


def wrk_round(server, model, seconds, clients, script):
    """`clients` wrk connections on `model` for `seconds`, sending the
    bodies `script` wrote for it: (requests, their seconds, p50 and p99 in
    ms)."""
    run = harness.wrk(f"{server.url}/v2/models/{model}/infer", script, seconds, threads=1,
                      connections=clients, env={"BODIES": str(script.parent / f"{model}.bodies")})
    if run["errors"]:
        raise SystemExit(f"{model}: {run['errors']} requests failed under wrk")
    return run["requests"], run["requests"] / run["rate"], run["p50"], run["p99"]


def bodies_of(side):
    """The request bodies of a side (`<m>`, `<m>_off` or `<m>_off<n>`)."""
    return bodies(side.split("_off")[0])


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_python(server, names, requests, args):
    """{side: (req/s, p50 ms, p99 ms)} from Python client threads, the
    sides taking turns round by round."""
    sides = {name: ([], 0.0) for name in names}
    for _ in range(args.rounds):
        for name in names:
            latencies, wall = round_of(server, name, requests, args.clients)
            kept, seconds = sides[name]
            sides[name] = (kept + latencies, seconds + wall)
    return {name: (len(latencies) / seconds, statistics.median(latencies) * 1e3,
                   percentile(latencies, 0.99) * 1e3)
            for name, (latencies, seconds) in sides.items()}


def measure_wrk(server, names, args, work):
    """{side: (req/s, p50 ms, p99 ms)} from wrk, the sides taking turns
    round by round."""
    script = work / "rotate.lua"
    script.write_text(ROTATE)
    for name in names:
        (work / f"{name}.bodies").write_bytes(b"\x01".join(bodies_of(name)))
    runs = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            runs[name].append(wrk_round(server, name, args.seconds, args.clients, script))
    return {name: (sum(r[0] for r in rs) / sum(r[1] for r in rs),
                   statistics.median(r[2] for r in rs), statistics.median(r[3] for r in rs))
            for name, rs in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    # 40 × 16 clients × 3 rounds: about 1900 requests a setting, so the p99
    # is the 19th slowest, not the 6th (at 12, two short runs read p99
    # on/off 1.75× and 3.05×, and longer ones 0.80× and 1.17×).
    parser.add_argument("--minilm-requests", type=int, default=40, help="per client per round, Python clients")
    parser.add_argument("--digits-requests", type=int, default=150, help="per client per round, Python clients")
    parser.add_argument("--client", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--seconds", type=int, default=5, help="per side per round, under wrk")
    parser.add_argument("--off-instances", type=lambda v: [int(n) for n in v.split(",")], default=[1, 2, 3, 4],
                        help="instance counts to serve batching off with besides the shipped one")
    args = parser.parse_args()
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("needs wrk (apt-get install wrk), or --client python")

    binary = harness.find_binary()
    work = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-bench-batching-"))
    repo, sides = repository(work, args.off_instances)
    server = harness.Server(binary, repo, [name for model in sides for name in sides[model]], args.threads,
                            timeout=180)
    requests = {"minilm": args.minilm_requests, "digits": args.digits_requests}
    rows = []
    try:
        for model, names in sides.items():
            # Warm every side up (first calls allocate, caches fill).
            for name in names:
                round_of(server, name, 2, args.clients)
            before = harness.histogram(server.url, "batch_size", model)
            stats = measure_wrk(server, names, args, work) if args.client == "wrk" else \
                measure_python(server, names, requests[model], args)
            after = harness.histogram(server.url, "batch_size", model)
            batched_rows, batches = after[0] - before[0], after[1] - before[1]
            rows.append((model, stats, batched_rows / max(batches, 1)))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.clients} concurrent clients ({args.client}), batch 1 each, {args.rounds} alternating "
          f"rounds, {args.threads} threads")
    print("| model | batching | instances | req/s | p50 ms | p99 ms | mean batch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model, stats, mean in rows:
        for name, (req, p50, p99) in stats.items():
            batching = "on" if name == model else "off (max_batch_size = 1)"
            batch = f"{mean:.1f}" if name == model else "1"
            print(f"| {model} | {batching} | {sides[model][name]} | {req:.1f} | {p50:.1f} | {p99:.1f} | {batch} |")
    # The shipped instance count suits batching; served alone, requests
    # may want another, so the ratio that counts is against the fastest.
    print("\n| model | throughput on/off | p99 on/off | against |")
    print("|---|---:|---:|---|")
    for model, stats, _ in rows:
        on = stats[model]
        fastest = max((name for name in stats if name != model), key=lambda name: stats[name][0])
        for name in dict.fromkeys((fastest, f"{model}_off")):
            off = stats[name]
            what = "the fastest off side" if name == fastest else "the shipped config, off"
            n = sides[model][name]
            print(f"| {model} | {on[0] / off[0]:.2f}x | {on[2] / off[2]:.2f}x | {what} ({n} "
                  f"instance{'s' * (n != 1)}) |")


if __name__ == "__main__":
    main()
