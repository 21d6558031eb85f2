#!/usr/bin/env python3
"""gpt2 over `/v1/completions`: time to first token and tokens/s, streamed
(SSE) against not streamed, and 8 concurrent streams against one — all in
the same run on the same server, turns alternating.

    cargo build --release -p edgeserve && cargo test --release -p edgeserve-e2e --no-run
    python3 bench/streaming.py [--rounds 10] [--tokens 48]

Greedy decoding (temperature 0), so every request generates the same tokens;
`max_tokens` tokens each. Non-streamed TTFT is the whole request (the client
sees nothing earlier). Prints a markdown table of medians over the rounds.
"""

import argparse
import http.client
import json
import statistics
import time

from harness import MODELS, Server, find_binary, in_threads

PROMPT = "Alice was beginning to get very tired of sitting by her sister on the bank"


def completion(port, tokens, stream):
    """(seconds to the first token, seconds in all, tokens) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"model": "gpt2", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
            "stream": stream}
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"/v1/completions answered {response.status}: {response.read()[:300]!r}")
    if not stream:
        answer = json.loads(response.read())
        total = time.perf_counter() - start
        return total, total, answer["usage"]["completion_tokens"]
    first, count = None, 0
    for line in response:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk["choices"] and chunk["choices"][0]["text"]:
            count += 1
            first = first if first is not None else time.perf_counter() - start
    conn.close()
    return first, time.perf_counter() - start, count


def concurrent(port, tokens, n):
    """Aggregate tokens/s and median TTFT of `n` streams started together."""
    results, wall = in_threads([lambda: completion(port, tokens, True)] * n)
    return statistics.median(r[0] for r in results), sum(r[2] for r in results) / wall

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    server = Server(find_binary(), MODELS, ["gpt2"], threads=2)
    port = server.port
    try:
        completion(port, 4, True)
        rows = {"not streamed": [], "streamed": [], "1 stream": [], "8 streams": []}
        for _ in range(args.rounds):
            for name, stream in (("not streamed", False), ("streamed", True)):
                ttft, total, count = completion(port, args.tokens, stream)
                rows[name].append((ttft, count / total))
            rows["1 stream"].append(concurrent(port, args.tokens, 1))
            rows["8 streams"].append(concurrent(port, args.tokens, 8))
    finally:
        server.stop()
    print(f"gpt2 /v1/completions, {args.tokens} tokens greedy, {args.rounds} rounds, medians")
    print("| request | time to first token (ms) | tokens/s |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        ttft = statistics.median(v[0] for v in values) * 1e3
        rate = statistics.median(v[1] for v in values)
        print(f"| {name} | {ttft:.1f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
