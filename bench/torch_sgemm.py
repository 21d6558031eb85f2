#!/usr/bin/env python3
"""PyTorch FP32 SGEMM throughput on CUDA: the baseline of issue 3's matmul goal
(edgeserve's GPU backend at >= 50% of it at 4096^3).

TF32 is disabled so the tensor cores do not stand in for FP32 math, matching
the f32 FMA kernels of edgeserve-gpu. Each size is warmed up, then timed with
CUDA events over enough products to take about `--seconds` (default 1 s).

Prints a markdown table with one row per size (256^3 ... 4096^3): milliseconds
per product and GFLOP/s (2*n^3 flops). Run it on the same machine as

    cargo run --release -p edgeserve-gpu --example matmul_gflops

and put the two tables side by side in bench/RESULTS.md.

Usage:
    pip install torch
    python3 bench/torch_sgemm.py [--sizes 256 512 1024 2048 4096] [--seconds 1]
"""

import argparse
import sys

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible to PyTorch", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    print(f"GPU: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, allow_tf32={torch.backends.cuda.matmul.allow_tf32}\n")
    print("| size | ms / product | PyTorch SGEMM GFLOP/s |")
    print("|-----:|-------------:|----------------------:|")
    for n in args.sizes:
        a = torch.rand(n, n, device=dev, dtype=torch.float32) - 0.5
        b = torch.rand(n, n, device=dev, dtype=torch.float32) - 0.5
        c = torch.empty(n, n, device=dev, dtype=torch.float32)
        for _ in range(3):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
        # One timed product sizes the repetition count.
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b, out=c)
        end.record()
        torch.cuda.synchronize()
        once = max(start.elapsed_time(end) / 1e3, 1e-6)
        reps = max(1, min(1000, int(args.seconds / once)))
        start.record()
        for _ in range(reps):
            torch.matmul(a, b, out=c)
        end.record()
        torch.cuda.synchronize()
        secs = start.elapsed_time(end) / 1e3 / reps
        print(f"| {n}³ | {secs * 1e3:.3f} | {2 * n**3 / secs / 1e9:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
