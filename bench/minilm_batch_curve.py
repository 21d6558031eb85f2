"""What one sentence costs `minilm` at each batch size: the ceiling on what
dynamic batching can gain over serving sentences one by one.

    export CARGO_TARGET_DIR=$HOME/.cache/edgeserve-target
    cargo build --release -p edgeserve && scripts/build-plugins.sh
    python3 bench/minilm_batch_curve.py [--repeats 30] [--threads 2]

One request at a time, each holding n of `bench/batching.py`'s sentences;
prints the median per request, per sentence, and sentences/s.
"""

import argparse
import json
import statistics

import harness
from batching import SENTENCES


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    server = harness.Server(harness.find_binary(), harness.MODELS, ["minilm"], args.threads)
    try:
        client = harness.Client(server.url)
        print("| batch | per request | per sentence | sentences/s |")
        print("|---:|---:|---:|---:|")
        for n in (1, 2, 4, 8, 16, 32):
            texts = [SENTENCES[i % len(SENTENCES)] for i in range(n)]
            raw = json.dumps({"inputs": [{"name": "text", "shape": [n], "datatype": "BYTES", "data": texts}],
                              "outputs": [{"name": "embedding"}]}).encode()
            [times] = harness.timed([lambda: client.post("minilm", raw)], args.repeats, warmup=3)
            median = statistics.median(times) * 1e3
            print(f"| {n} | {median:.2f} ms | {median / n:.2f} ms | {1e3 * n / median:.0f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
