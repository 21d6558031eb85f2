#!/usr/bin/env python3
"""Two builds of edgeserve side by side: the same requests to both servers,
taking turns request by request, so a refactor or an optimisation can be
shown to be no slower (or how much faster) on a noisy shared machine.

Each side is a release binary and a model repository holding the plugins
built with it (plugins and SDK change with the host). Both servers run on
`--device cpu` with the same compute threads; only one is busy at a time.
Prints a Markdown table: p50 and mean per request for each side and the
ratio of the p50s (B / A: below 1 means B is faster). Both sides must answer
each request with the same bytes, which is checked before timing; with
`--tolerance T` (a change that rounds differently), JSON answers may differ
in numbers by at most T relative to the larger magnitude (or T absolute
below 1).

Usage (A = before, B = after):
    git worktree add /tmp/before <rev> && (cd /tmp/before && \
        CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p edgeserve && \
        CARGO_TARGET_DIR=/tmp/before-target scripts/build-plugins.sh)
    scripts/build-plugins.sh && cargo build --release -p edgeserve
    python3 bench/ab_builds.py --a /tmp/before-target/release/edgeserve:/tmp/before/examples/models \
        --b target/release/edgeserve:examples/models [--requests 200] [--threads 2] [--tolerance T]
"""

import argparse
import json
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import harness  # noqa: E402

REQUESTS = harness.REPO / "examples" / "requests"


def body(name):
    return json.loads((REQUESTS / f"{name}.json").read_text())


def digits_batch(n):
    one = body("digits")
    x = one["inputs"][0]
    data = x["data"] * n
    return {"inputs": [dict(x, shape=[n] + x["shape"][1:], data=data)]}


def cases():
    """(label, model, request body, headers): every example model, small
    and large, and a large binary-extension body."""
    minilm = body("minilm")
    sentences = minilm["inputs"][0]["data"]
    minilm1 = dict(minilm, inputs=[dict(minilm["inputs"][0], shape=[1], data=sentences[:1])])
    minilm32 = dict(minilm, inputs=[dict(minilm["inputs"][0], shape=[32],
                                         data=(sentences * 11)[:32])])
    gpt2 = body("gpt2")
    json_cases = [
        ("linear [4,1]", "linear",
         {"inputs": [{"name": "x", "shape": [4, 1], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
        ("digits batch 1", "digits", digits_batch(1)),
        ("digits batch 64", "digits", digits_batch(64)),
        ("recommender", "recommender", body("recommender")),
        ("minilm batch 1", "minilm", minilm1),
        ("minilm batch 3", "minilm", minilm),
        ("minilm batch 32", "minilm", minilm32),
        ("gpt2 16 tokens (seeded sampling)", "gpt2", gpt2),
    ]
    return [(label, model, json.dumps(request).encode(), None) for label, model, request in json_cases] + [
        ("linear [1Mi,1] binary extension (4 MiB each way)", "linear", *harness.binary_linear(1 << 20)),
    ]


def side(spec):
    binary, _, repository = spec.partition(":")
    if not repository:
        sys.exit(f"--a/--b take BINARY:REPOSITORY, got {spec!r}")
    return pathlib.Path(binary).resolve(), pathlib.Path(repository).resolve()


def ms(seconds):
    return f"{seconds * 1e3:.2f} ms"


def agree(a, b, tolerance):
    """Whether two answers agree: the same bytes, or with a `tolerance`,
    the same JSON with numbers that close."""
    if a == b:
        return True
    if tolerance is None:
        return False
    def same(x, y):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            return abs(x - y) <= tolerance * max(1.0, abs(x), abs(y))
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(same(p, q) for p, q in zip(x, y))
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        return x == y
    try:
        return same(json.loads(a), json.loads(b))
    except ValueError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="BINARY:REPOSITORY of the baseline build")
    parser.add_argument("--b", required=True, help="BINARY:REPOSITORY of the build under test")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case and side")
    parser.add_argument("--threads", type=int, default=2, help="compute threads of each server")
    parser.add_argument("--tolerance", type=float, help="let JSON numbers differ this much (relative)")
    args = parser.parse_args()

    selected = cases()
    models = sorted({model for _, model, _, _ in selected})
    servers = [harness.Server(binary, repo, models, args.threads) for binary, repo in (side(args.a), side(args.b))]
    try:
        clients = [harness.Client(s.url) for s in servers]
        tolerance = f" --tolerance {args.tolerance}" if args.tolerance is not None else ""
        print(f"`python3 bench/ab_builds.py --requests {args.requests} --threads {args.threads}{tolerance}`\n")
        print("| Request | A p50 | B p50 | A mean | B mean | B/A p50 |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, model, raw, headers in selected:
            answers = [c.post(model, raw, headers) for c in clients]
            if not agree(*answers, args.tolerance):
                sys.exit(f"{label}: the builds answer differently:\nA {answers[0][:300]!r}\nB {answers[1][:300]!r}")
            warmup = max(3, args.requests // 20)
            times = harness.timed([lambda c=c: c.post(model, raw, headers) for c in clients], args.requests, warmup)
            p50 = [statistics.median(t) for t in times]
            mean = [statistics.fmean(t) for t in times]
            print(f"| {label} | {ms(p50[0])} | {ms(p50[1])} | {ms(mean[0])} | {ms(mean[1])} | "
                  f"{p50[1] / p50[0]:.3f} |", flush=True)
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
