#!/usr/bin/env python3
"""The GPU backend against the CPU backend and PyTorch on the GPU: all-MiniLM-L6-v2
at batch 1 and 32 and digits at batch 64, over HTTP on an edgeserve
`--device gpu` and an edgeserve `--device cpu` server, against PyTorch in
process on `--torch-device` (CUDA where there is one), the three taking turns
request by request.

This is the device run's latency table (bench/device/run.sh); it also runs
anywhere else, where the "GPU" may be Mesa's lavapipe on the same cores and
PyTorch runs on the CPU (then the table shows correctness and overhead, not
GPU speed).

`--make-minilm-weights`: when the repository's minilm has no
model.safetensors (the device machine cannot fetch them and they are too
large to carry), writes one with seeded random weights in the shape of the
folder's config.json (a BertModel state dict); both sides then serve the same
random model, which times the same work. Without it, the repository must hold
the real weights (scripts/fetch-minilm.sh).

Each row first checks the answers agree (worst cosine for minilm, max abs
difference of the probabilities for digits), then times `--requests` turns.
edgeserve's times include the client's HTTP, the server's JSON and, for
minilm, the in-guest tokenizer; PyTorch's are the model call alone (its
tokenizer included for minilm, `encode`), with the device synchronised.

A second table sends the same requests from 1, 4 and 16 clients at once
(`--clients`), each on its own keep-alive connection, to each server in
turn: requests per second over all clients, and that rate against the one
client's. On a GPU it shows whether concurrent requests overlap on the
device or queue behind each other.

Usage:
    python3 bench/gpu_vs_cpu.py [--binary BIN] [--repository DIR] [--requests 30]
        [--threads N] [--torch-device cuda|cpu] [--make-minilm-weights]
        [--clients 1,4,16] [--client-requests 20]
"""

import argparse
import json
import os
import pathlib
import statistics
import sys

import harness  # first: it sets OMP_WAIT_POLICY before torch loads
import numpy as np

sys.path.insert(0, str(harness.REPO / "plugins" / "minilm"))
import reference  # noqa: E402  (the minilm model assembled as the tests do)

from minilm_vs_torch import cosine  # noqa: E402
from sentences import SENTENCES  # noqa: E402


RANDOM_WEIGHTS = "seeded random weights (torch.manual_seed(0)) in the published shapes"


def make_minilm_weights(folder):
    """Seeded random BertModel weights shaped by folder/config.json, saved as
    folder/model.safetensors."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig.from_json_file(str(folder / "config.json")))
    state = {name: t.contiguous() for name, t in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"weights": RANDOM_WEIGHTS})


def digits_torch(repository, device):
    """The digits MLP (64 → 64 → 32 → 10, relu, softmax) in PyTorch on
    `device`, with the repository's weights."""
    import torch
    from safetensors.torch import load_file

    w = load_file(str(repository / "digits" / "1" / "model.safetensors"))
    layers = []
    for i, name in enumerate(["fc1", "fc2", "fc3"]):
        weight = w[f"{name}.weight"]
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.weight.data, linear.bias.data = weight, w[f"{name}.bias"]
        layers += [linear] + ([torch.nn.ReLU()] if i < 2 else [torch.nn.Softmax(dim=1)])
    return torch.nn.Sequential(*layers).to(device).eval()


def throughput(url, model, raw, clients, requests):
    """Requests per second when `clients` connections each post `raw`
    `requests` times at once (after one untimed request each)."""
    conns = [harness.Client(url) for _ in range(clients)]
    for conn in conns:
        conn.post(model, raw)
    _, wall = harness.in_threads([lambda conn=conn: [conn.post(model, raw) for _ in range(requests)]
                                  for conn in conns])
    return clients * requests / wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", help="edgeserve binary (default: $CARGO_TARGET_DIR or target/release)")
    parser.add_argument("--repository", default=str(harness.MODELS), help="model repository with digits and minilm")
    parser.add_argument("--requests", type=int, default=30, help="timed turns per row")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for the cpu server and PyTorch")
    parser.add_argument("--torch-device", help="PyTorch's device (default: cuda when available, else cpu)")
    parser.add_argument("--make-minilm-weights", action="store_true", help="seeded random minilm weights when absent")
    parser.add_argument("--clients", default="1,4,16", help="client counts of the concurrency table")
    parser.add_argument("--client-requests", type=int, default=20, help="requests per client per turn")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    repository = pathlib.Path(args.repository).resolve()
    minilm_dir = repository / "minilm" / "1"
    weights = minilm_dir / "model.safetensors"
    if not weights.exists():
        if not args.make_minilm_weights:
            sys.exit(f"{weights} is missing: run scripts/fetch-minilm.sh or pass --make-minilm-weights")
        make_minilm_weights(minilm_dir)
    from safetensors import safe_open
    with safe_open(str(weights), "np") as f:
        weights_note = (f.metadata() or {}).get("weights", "the published weights")

    minilm = reference.load(minilm_dir, device)
    digits = digits_torch(repository, device)
    from sklearn.datasets import load_digits
    images = load_digits().data[:64].astype(np.float32)
    images_on_device = torch.from_numpy(images).to(device)

    binary = args.binary or harness.find_binary()
    servers = {}
    try:
        for name in ("gpu", "cpu"):
            servers[name] = harness.Server(binary, repository, ["digits", "minilm"], args.threads,
                                           device=name, timeout=600)
        clients = {name: harness.Client(s.url) for name, s in servers.items()}
        rows = []
        for batch in (1, 32):
            sentences = SENTENCES[:batch]
            body = {"inputs": [{"name": "text", "shape": [batch], "datatype": "BYTES", "data": sentences}],
                    "outputs": [{"name": "embedding"}]}
            raw = json.dumps(body).encode()
            with torch.inference_mode():
                theirs = minilm.encode(sentences, batch_size=batch)
            agree = []
            for name, client in clients.items():
                ours = client.infer("minilm", body)["embedding"]
                worst = min(cosine(ours[i * 384:(i + 1) * 384], theirs[i]) for i in range(batch))
                agree.append(f"{name} cosine ≥ {worst:.6f}")

            def torch_minilm(sentences=sentences, batch=batch):
                with torch.inference_mode():
                    # It returns numpy arrays, so it waits for the device.
                    minilm.encode(sentences, batch_size=batch)

            times = harness.timed([lambda raw=raw: clients["gpu"].post("minilm", raw),
                                   lambda raw=raw: clients["cpu"].post("minilm", raw),
                                   torch_minilm], args.requests, warmup=3)
            rows.append((f"minilm ({batch} sentence{'s' if batch > 1 else ''})", times, "; ".join(agree)))

        body = {"inputs": [{"name": "pixels", "shape": [64, 64], "datatype": "FP32", "data": images.ravel().tolist()}]}
        raw = json.dumps(body).encode()
        with torch.inference_mode():
            theirs = digits(images_on_device).cpu().numpy()
        agree = []
        for name, client in clients.items():
            ours = np.array(client.infer("digits", body)["probabilities"]).reshape(64, 10)
            agree.append(f"{name} max abs Δp {np.abs(ours - theirs).max():.1e}")

        def torch_digits():
            with torch.inference_mode():
                # .cpu() waits for the device.
                digits(torch.from_numpy(images).to(device)).cpu()

        times = harness.timed([lambda: clients["gpu"].post("digits", raw),
                               lambda: clients["cpu"].post("digits", raw),
                               torch_digits], args.requests, warmup=3)
        rows.append(("digits (64 images)", times, "; ".join(agree)))

        # The same requests from several clients at once, the servers
        # taking turns (the order flipped every other turn).
        concurrent = []
        minilm_one = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                             "data": SENTENCES[:1]}],
                                 "outputs": [{"name": "embedding"}]}).encode()
        for label, model, body in (("minilm (1 sentence)", "minilm", minilm_one),
                                   ("digits (64 images)", "digits", raw)):
            for n in (int(c) for c in args.clients.split(",")):
                rates = {"gpu": [], "cpu": []}
                for turn in range(2):
                    for name in (("gpu", "cpu") if turn % 2 == 0 else ("cpu", "gpu")):
                        rates[name].append(throughput(servers[name].url, model, body, n, args.client_requests))
                concurrent.append((label, n, statistics.mean(rates["gpu"]), statistics.mean(rates["cpu"])))
        # Which adapter the gpu server runs on: a missing driver would leave
        # it on a software one, and the table would not be GPU figures.
        devices = {name: json.loads(harness.get(s.url, "/v2")[1])["device"] for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    gpu_name = torch.cuda.get_device_name() if device == "cuda" else "none (PyTorch on the CPU)"
    print(f"edgeserve `--device gpu` and `--device cpu` (HTTP, OIP JSON, one keep-alive connection each) "
          f"vs PyTorch {torch.__version__} on {device} ({gpu_name}); {args.threads} CPU threads; "
          f"minilm with {weights_note}; {args.requests} turns per row; load average at the end "
          f"{os.getloadavg()[0]:.2f}; the servers' devices (`GET /v2`): "
          + "; ".join(f"{name}: {d['name']} ({', '.join(filter(None, (d['api'], d['driver'])))})"
                    for name, d in devices.items()) + "\n")
    print("| request | edgeserve gpu p50 / mean (ms) | edgeserve cpu p50 / mean (ms) | PyTorch p50 / mean (ms) "
          "| gpu ÷ cpu (p50) | gpu ÷ PyTorch (p50) | agreement |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, (gpu, cpu, ref), note in rows:
        g, c, r = (statistics.median(t) for t in (gpu, cpu, ref))
        cell = lambda t: f"{1e3 * statistics.median(t):.2f} / {1e3 * statistics.mean(t):.2f}"  # noqa: E731
        print(f"| {label} | {cell(gpu)} | {cell(cpu)} | {cell(ref)} | {g / c:.2f} | {g / r:.2f} | {note} |")
    print(f"\nConcurrent clients, each on its own connection, {args.client_requests} requests each per turn, "
          "two turns per server (mean req/s):\n")
    print("| request | clients | edgeserve gpu req/s | vs 1 client | edgeserve cpu req/s | vs 1 client |")
    print("|---|---:|---:|---:|---:|---:|")
    single = {label: (gpu, cpu) for label, n, gpu, cpu in concurrent if n == 1}
    for label, n, gpu, cpu in concurrent:
        one = single.get(label)
        scale = (lambda r, base: f"{r / base:.2f}×") if one else (lambda r, base: "–")  # noqa: E731
        # Decimals below 10: a software device serves well under 1 req/s.
        rate = lambda r: f"{r:.0f}" if r >= 10 else f"{r:.2f}"  # noqa: E731
        print(f"| {label} | {n} | {rate(gpu)} | {scale(gpu, one[0] if one else 1)} "
              f"| {rate(cpu)} | {scale(cpu, one[1] if one else 1)} |")


if __name__ == "__main__":
    main()
