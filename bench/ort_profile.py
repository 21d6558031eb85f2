#!/usr/bin/env python3
"""Where ONNX Runtime spends all-MiniLM-L6-v2's time: the graph and session
options of bench/minilm_vs_torch.py (the same export, `--threads` intra-op
threads, spinning off) run with ONNX Runtime's own profiler on the 32
sentences (padded, as ONNX Runtime needs), kernel time per run summed by op
type. Prints a markdown table and the products' GFLOP/s (the linear layers'
and attention's, all of which run as MatMul).

With `--matmul M`, instead: one MatMul of an [M, 384] input by a constant
[384, 1536] weight (an initializer, which ONNX Runtime packs once at load),
timed alone, in GFLOP/s — to set beside edgeserve's `cargo run --release -p
edgeserve-tensor --example cpu_bench "gflops [M,384]x[1536"` in the same run.

Usage:
    python3 bench/ort_profile.py [--threads 2] [--runs 20] [--matmul M]
"""

import argparse
import collections
import json
import pathlib
import tempfile

import harness  # first: it sets OMP_WAIT_POLICY before torch loads
import minilm_vs_torch as mt

# Runs left out of the figures: the first ones allocate and warm caches.
WARMUP = 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--runs", type=int, default=20, help="profiled runs, after 3 left out")
    parser.add_argument("--matmul", type=int, metavar="M", help="time one [M,384]x[384,1536] MatMul instead")
    args = parser.parse_args()

    if args.matmul:
        return time_matmul(args.matmul, args.threads)

    import numpy as np
    import onnxruntime as ort

    model = mt.reference.load()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-ort-profile-"))
    mt.onnx_runtime(model, args.threads, folder)  # writes folder/minilm.onnx
    batch = model.tokenizer(mt.SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="np")
    feed = {n: batch[n].astype(np.int64) for n in ["input_ids", "attention_mask", "token_type_ids"]}
    profiled = harness.ort_session(str(folder / "minilm.onnx"), args.threads, folder / "profile")
    for _ in range(WARMUP + args.runs):
        profiled.run(None, feed)
    events = json.loads(pathlib.Path(profiled.end_profiling()).read_text())

    # Only what ran after the profiled session's own warm-up runs.
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    after = run_starts[WARMUP]
    by_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= after:
            by_op[e["args"]["op_name"]] += e["dur"]
    per_run = {op: us / args.runs / 1e3 for op, us in by_op.items()}
    total = sum(per_run.values())
    tokens = feed["input_ids"].size
    batch_size, length = feed["input_ids"].shape
    # MiniLM's six layers: q, k, v, output (384×384) and the FFN (384×1536 twice), 2 flops each;
    # MatMul's time also holds attention's two products per layer (q·kᵀ and scores·v, 12 heads of 32).
    flops = tokens * 6 * 2 * (4 * 384 * 384 + 2 * 384 * 1536)
    flops += 6 * 2 * 2 * batch_size * length * length * 384
    print(f"ONNX Runtime {ort.__version__}, {args.threads} threads, batch {feed['input_ids'].shape} "
          f"(padded), {args.runs} profiled runs\n")
    print("| op | ms per run | share |\n|---|---:|---:|")
    for op, ms in sorted(per_run.items(), key=lambda kv: -kv[1])[:8]:
        print(f"| {op} | {ms:.2f} | {100 * ms / total:.1f}% |")
    print(f"| total | {total:.1f} | |")
    matmul = per_run.get("MatMul", 0.0) + per_run.get("FusedMatMul", 0.0)
    print(f"\nproducts (linear layers and attention): {flops / 1e9:.1f} GFLOP in MatMul + FusedMatMul's {matmul:.1f} ms "
          f"= {flops / matmul / 1e6:.0f} GFLOP/s")


def time_matmul(m, threads):
    """Prints the GFLOP/s of x[m, 384] · W[384, 1536], W an initializer."""
    import time

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    k, n = 384, 1536
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = harness.ort_session(proto.SerializeToString(), threads)
    feed = {"x": np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)}
    for _ in range(WARMUP):
        session.run(None, feed)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    print(f"ONNX Runtime MatMul [{m},{k}]x[{k},{n}] (weight packed at load), {threads} threads: "
          f"median {1e3 * median:.2f} ms, {2 * m * n * k / median / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
