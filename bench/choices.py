#!/usr/bin/env python3
"""gpt2 choices (`n` > 1) over `/v1/completions`, run side by side on the
model's instances, against the same choices generated one after another in
one batched OIP request (how `n` ran before) — same run, same server, turns
alternating.

    cargo build --release -p edgeserve
    python3 bench/choices.py [--rounds 10] [--tokens 64] [--n 2]

Seeded sampling: choice i of the completion runs with the seed advanced by i
SplitMix64 steps, which is exactly the generator gpt2 gives element i of a
batched request with that seed, so both sides generate the same texts (the
script checks). The example gpt2 has 2 instances. Prints a markdown table of
medians over the rounds.
"""

import argparse
import json
import statistics

from harness import MODELS, Client, Server, find_binary, timed

PROMPT = "Alice was beginning to get very tired of sitting by her sister on the bank"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--n", type=int, default=2)
    args = parser.parse_args()
    server = Server(find_binary(), MODELS, ["gpt2"], threads=2)
    client = Client(server.url)
    options = {"max_tokens": args.tokens, "temperature": 1.0, "seed": 11}
    completion = json.dumps({"model": "gpt2", "prompt": PROMPT, "n": args.n, **options}).encode()
    batched = {
        "inputs": [{"name": "text", "shape": [args.n], "datatype": "BYTES",
                    "data": [PROMPT] * args.n}],
        "parameters": options,
    }

    def side_by_side():
        client.conn.request("POST", "/v1/completions", completion,
                            {"content-type": "application/json"})
        response = client.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"/v1/completions answered {response.status}: {body[:300]!r}")
        return [c["text"] for c in json.loads(body)["choices"]]

    def one_after_another():
        return client.infer("gpt2", batched)["text"]

    try:
        texts = side_by_side()
        assert texts == one_after_another(), "the two sides generated different texts"
        times = timed([side_by_side, one_after_another], args.rounds, warmup=1)
    finally:
        server.stop()
    print(f"gpt2, {args.n} choices of up to {args.tokens} tokens, seeded, "
          f"{args.rounds} rounds, medians (the same {len(texts)} texts on both sides)")
    print("| how | ms per request |")
    print("|---|---:|")
    for name, values in (("/v1 n choices side by side", times[0]),
                         ("one batched OIP request (sequential)", times[1])):
        print(f"| {name} | {statistics.median(values) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
