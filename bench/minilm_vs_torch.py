#!/usr/bin/env python3
"""all-MiniLM-L6-v2 sentence embeddings: edgeserve (the `minilm` plugin over
HTTP, CPU backend) against PyTorch (sentence-transformers' `encode` on the same
weights, CPU) and ONNX Runtime (the same weights exported with
`torch.onnx.export`, run in-process), in the same run on the same machine, at
batch 1 and batch 32.

edgeserve's figures include everything a client sees: JSON encoding, HTTP on
loopback (one keep-alive connection), the host's request checks, the guest's
tokenizer and the response; PyTorch's are `encode` alone (its tokenizer, the
model, pooling, normalization) and ONNX Runtime's the same tokenizer, the
session run and the same pooling in numpy, so the comparison is conservative
for edgeserve. All use the same number of threads (`--threads`: rayon's pool
on the server via RAYON_NUM_THREADS, `torch.set_num_threads`, ONNX Runtime's
intra-op threads with spinning off, as a server shares its cores).

Prints a markdown table: p50 and mean latency per request, sentences per
second at the p50, and the ratios of the p50s, baseline / edgeserve (above 1:
edgeserve is faster). The two sides take turns request by request, so both
see the same background load; on a busy machine the medians are the figures
to compare (means suffer most when cores are oversubscribed). PyTorch's
OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE, as in bench/models.py)
unless OMP_WAIT_POLICY is exported.

Usage:
    python3 -m pip install -r tests/requirements.txt -r bench/requirements.txt
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

sys.path.insert(0, str(harness.REPO / "plugins" / "minilm"))
import reference  # noqa: E402  (loads the model exactly as the test reference does)

from sentences import SENTENCES  # noqa: E402,F401  (models.py reads it from here too)


def start_server(binary, threads):
    """edgeserve over a temporary repository holding minilm; returns (server, dir)."""
    repo = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-bench-minilm-"))
    harness.model_folder("minilm", repo / "minilm")
    return harness.Server(binary, repo, ["minilm"], threads, timeout=120), repo


def embed(client, sentences):
    """minilm's embeddings of `sentences`, flattened (the client's JSON work
    included, as a client sees it)."""
    body = {
        "inputs": [{"name": "text", "shape": [len(sentences)], "datatype": "BYTES", "data": sentences}],
        "outputs": [{"name": "embedding"}],
    }
    return client.infer("minilm", body)["embedding"]


def onnx_runtime(model, threads, folder):
    """An `encode` over ONNX Runtime: sentence-transformers' transformer
    exported to `folder`, its tokenizer, mean pooling and normalization."""
    import numpy as np
    import torch

    class Transformer(torch.nn.Module):
        """The encoder with keyword inputs, which transformers' positional
        order no longer matches, and its last hidden state as the output."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    transformer = Transformer(model[0].auto_model).eval()
    tokenizer = model.tokenizer
    sample = tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    path = str(folder / "minilm.onnx")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            transformer,
            (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
            path,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    session = harness.ort_session(path, threads)

    def encode(sentences):
        batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="np")
        feed = {name: batch[name].astype(np.int64) for name in names}
        hidden = session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return encode


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running edgeserve serving minilm (default: start one)")
    parser.add_argument(
        "--binary",
        type=pathlib.Path,
        help="the edgeserve to start (default: the release build under $CARGO_TARGET_DIR or target/); "
        "alternate two builds run by run to compare them, as a server's start can matter",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="compute threads for both (default: all cores)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests at batch 1 (batch 32 gets a fifth)")
    parser.add_argument("--batch32-requests", type=int, help="timed requests at batch 32 (default: a fifth of --requests)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    model = reference.load()

    server, repo = None, None
    export_dir = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-bench-minilm-onnx-"))
    url = args.url
    if url is None:
        server, repo = start_server(args.binary or harness.find_binary(), args.threads)
        url = server.url
    try:
        client = harness.Client(url)
        # Same inputs, same answers: the comparison is of equal work.
        ours = embed(client, SENTENCES)
        theirs = model.encode(SENTENCES, batch_size=len(SENTENCES))
        worst = min(cosine(ours[i * 384:(i + 1) * 384], theirs[i].tolist()) for i in range(len(SENTENCES)))
        ort_encode = onnx_runtime(model, args.threads, export_dir)
        via_ort = ort_encode(SENTENCES)
        worst_ort = min(cosine(ours[i * 384:(i + 1) * 384], via_ort[i].tolist()) for i in range(len(SENTENCES)))

        rows = []
        for batch, repeats in [(1, args.requests), (32, args.batch32_requests or max(args.requests // 5, 3))]:
            sentences = SENTENCES[:batch]
            with torch.inference_mode():
                edge, ref, onnx = harness.timed(
                    [
                        lambda: embed(client, sentences),
                        lambda: model.encode(sentences, batch_size=batch),
                        lambda: ort_encode(sentences),
                    ],
                    repeats,
                    warmup=3,
                )
            rows.append((batch, repeats, edge, ref, onnx))
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(export_dir, ignore_errors=True)

    import onnxruntime

    ms = lambda t: f"{1000 * t:.1f}"  # noqa: E731
    print(f"all-MiniLM-L6-v2, CPU, {args.threads} threads, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; worst cosine over the 32 sentences, "
          f"edgeserve vs PyTorch: {worst:.7f}, vs ONNX Runtime: {worst_ort:.7f}\n")
    print("| batch | requests | edgeserve p50 / mean (ms) | PyTorch p50 / mean (ms) | ONNX Runtime p50 / mean (ms) "
          "| edgeserve sentences/s | PyTorch / edgeserve (p50) | ONNX Runtime / edgeserve (p50) "
          "| ONNX Runtime / edgeserve, paired per turn: median [95% CI] |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch, repeats, edge, ref, onnx in rows:
        e50, r50, o50 = (statistics.median(t) for t in (edge, ref, onnx))
        mean = statistics.mean
        paired, low, high = harness.paired_ratio(onnx, edge)
        print(f"| {batch} | {repeats} | {ms(e50)} / {ms(mean(edge))} | {ms(r50)} / {ms(mean(ref))} "
              f"| {ms(o50)} / {ms(mean(onnx))} | {batch / e50:.1f} | {r50 / e50:.2f} | {o50 / e50:.2f} "
              f"| {paired:.3f} [{low:.3f}, {high:.3f}] |")

if __name__ == "__main__":
    main()
