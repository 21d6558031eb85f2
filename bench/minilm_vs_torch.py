#!/usr/bin/env python3
"""all-MiniLM-L6-v2 sentence embeddings: edgeserve (the `minilm` plugin over
HTTP, CPU backend) against PyTorch (sentence-transformers' `encode` on the same
weights, CPU), in the same run on the same machine, at batch 1 and batch 32.

edgeserve's figures include everything a client sees: JSON encoding, HTTP on
loopback (one keep-alive connection), the host's request checks, the guest's
tokenizer and the response; PyTorch's are `encode` alone (its tokenizer, the
model, pooling, normalization), so the comparison is conservative for
edgeserve. Both use the same number of threads (`--threads`: rayon's pool on
the server via RAYON_NUM_THREADS, `torch.set_num_threads`).

Prints a markdown table: p50 and mean latency per request, sentences per
second at the p50, and the ratio of the p50s, PyTorch / edgeserve (above 1:
edgeserve is faster). The two sides take turns request by request, so both
see the same background load; on a busy machine the medians are the figures
to compare (means suffer most when cores are oversubscribed). PyTorch's
OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE, as in bench/models.py)
unless OMP_WAIT_POLICY is exported.

Usage:
    scripts/fetch-minilm.sh
    cargo build --release -p edgeserve
    (cd plugins && cargo build --release --target wasm32-wasip2 -p minilm)
    python3 bench/minilm_vs_torch.py [--url http://127.0.0.1:8000] [--threads N]

Without --url it starts `edgeserve serve` itself (from $CARGO_TARGET_DIR or
target/release) on a free port, over a temporary repository holding only
minilm (the freshly built plugin, the fetched weights linked in).
"""

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile

# First: it sets OMP_WAIT_POLICY before `reference` below loads torch.
import harness

MODEL = harness.MODELS / "minilm"

sys.path.insert(0, str(harness.REPO / "plugins" / "minilm"))
import reference  # noqa: E402  (loads the model exactly as the test reference does)

# 32 everyday sentences of 6 to 25 words; batch 1 uses the first.
SENTENCES = [
    "A man is playing a guitar on the street corner.",
    "The new movie was surprisingly good.",
    "How do I reset my password if I no longer have access to my email account?",
    "Stock markets fell sharply after the central bank raised interest rates again.",
    "She adopted a small grey cat from the shelter last weekend.",
    "What is the capital of Australia?",
    "Machine learning models can be deployed close to their users at the edge.",
    "The restaurant was crowded, but the service was quick and friendly.",
    "Please turn off the lights when you leave the room.",
    "Scientists discovered a new species of frog in the rainforest.",
    "My flight was delayed by three hours because of a storm.",
    "Sentence embeddings map text to points in a vector space.",
    "The children built a sandcastle on the beach.",
    "Is it going to rain tomorrow afternoon in Paris?",
    "This laptop has a long battery life and a bright display.",
    "The committee will announce its decision at the end of the month.",
    "He forgot his umbrella on the train again.",
    "Add two cups of flour and a pinch of salt, then stir slowly.",
    "The museum is closed on Mondays and public holidays.",
    "Our team won the championship after a dramatic final match.",
    "Electric cars are becoming cheaper every year.",
    "Can you recommend a good book about the history of mathematics?",
    "The river flooded the village after days of heavy rain.",
    "I would like to cancel my subscription, please.",
    "The concert starts at eight, so we should leave by seven.",
    "Vaccines train the immune system to recognize a pathogen.",
    "The bakery on the corner sells the best croissants in town.",
    "Traffic on the highway was unusually light this morning.",
    "Quantum computers use qubits instead of classical bits.",
    "The hotel room had a beautiful view of the mountains.",
    "Remember to back up your files before updating the system.",
    "The dog barked at the mail carrier every single day.",
]


def find_plugin():
    for base in [harness.REPO / "plugins" / "target", pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "/nonexistent")) / "wasm-plugins"]:
        path = base / "wasm32-wasip2" / "release" / "minilm.wasm"
        if path.is_file():
            return path
    sys.exit("no minilm.wasm: run `cd plugins && cargo build --release --target wasm32-wasip2 -p minilm`")


def start_server(threads):
    """edgeserve over a temporary repository holding minilm; returns (server, dir)."""
    repo = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-bench-minilm-"))
    version = repo / "minilm" / "1"
    version.mkdir(parents=True)
    shutil.copy(MODEL / "config.toml", repo / "minilm" / "config.toml")
    shutil.copy(find_plugin(), version / "model.wasm")
    for f in (MODEL / "1").iterdir():
        if f.name != "model.wasm":
            (version / f.name).symlink_to(f.resolve())
    return harness.Server(harness.find_binary(), repo, ["minilm"], threads, timeout=120), repo


def embed(client, sentences):
    """minilm's embeddings of `sentences`, flattened (the client's JSON work
    included, as a client sees it)."""
    body = {
        "inputs": [{"name": "text", "shape": [len(sentences)], "datatype": "BYTES", "data": sentences}],
        "outputs": [{"name": "embedding"}],
    }
    return client.infer("minilm", body)["embedding"]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running edgeserve serving minilm (default: start one)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="compute threads for both (default: all cores)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests at batch 1 (batch 32 gets a fifth)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = reference.load()

    server, repo = None, None
    url = args.url
    if url is None:
        server, repo = start_server(args.threads)
        url = server.url
    try:
        client = harness.Client(url)
        # Same inputs, same answers: the comparison is of equal work.
        ours = embed(client, SENTENCES)
        theirs = model.encode(SENTENCES, batch_size=len(SENTENCES))
        worst = min(cosine(ours[i * 384:(i + 1) * 384], theirs[i].tolist()) for i in range(len(SENTENCES)))

        rows = []
        for batch, repeats in [(1, args.requests), (32, max(args.requests // 5, 3))]:
            sentences = SENTENCES[:batch]
            with torch.inference_mode():
                edge, ref = harness.timed(
                    [lambda: embed(client, sentences), lambda: model.encode(sentences, batch_size=batch)],
                    repeats,
                    warmup=3,
                )
            rows.append((batch, repeats, edge, ref))
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(repo, ignore_errors=True)

    ms = lambda t: f"{1000 * t:.1f}"  # noqa: E731
    print(f"all-MiniLM-L6-v2, CPU, {args.threads} threads, torch {torch.__version__}; "
          f"worst cosine edgeserve vs PyTorch over the 32 sentences: {worst:.7f}\n")
    print("| batch | requests | edgeserve p50 / mean (ms) | PyTorch p50 / mean (ms) "
          "| edgeserve sentences/s | PyTorch sentences/s | PyTorch / edgeserve (p50) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for batch, repeats, edge, ref in rows:
        e50, r50 = statistics.median(edge), statistics.median(ref)
        print(f"| {batch} | {repeats} | {ms(e50)} / {ms(statistics.mean(edge))} | {ms(r50)} / {ms(statistics.mean(ref))} "
              f"| {batch / e50:.1f} | {batch / r50:.1f} | {r50 / e50:.2f} |")


if __name__ == "__main__":
    main()
