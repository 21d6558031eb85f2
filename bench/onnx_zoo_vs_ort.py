#!/usr/bin/env python3
"""Architectures whose ONNX exports need the handler's composed ops, served by
edgeserve (`edgeserve import`, CPU backend, over HTTP) against onnxruntime
in-process on the same files, in the same run, the sides taking turns
request by request:

* MobileNetV2 (transformers, width 1.0, 224x224, random weights at a
  trained net's scale, see `mobilenet`): TF-style
  asymmetric `Pad` before every conv, depthwise convs, ReLU6 as `Clip`;
* a GPT-2 (transformers, 6 layers, hidden 384, 6 heads, vocabulary 8000,
  random weights) over 64 tokens: `Split` of the fused QKV, the causal mask
  by `Trilu`;
* BERT-base (transformers' default `BertConfig`: 12 layers, hidden 768, 12
  heads, as bert-base-uncased; random weights) over 64 tokens: the encoder
  size most sentence-embedding and classification models built on BERT use;
* a stacked LSTM (torch, 2 layers, 256 hidden, 32 features) over 50 steps;
* a YOLOv4-style CNN stage (torch: four 3x3 convolutions with batch norm and
  Mish, 112x112 in, pooled): Mish as x·tanh(Softplus x), a log, an exp and
  a tanh per element of every feature map.

Each case's answers are checked against onnxruntime's first (the run stops
past 1e-3). onnxruntime runs with the same number of intra-op threads,
spinning off. Prints a markdown table of p50 latencies and the ratio
edgeserve / onnxruntime (above 1: onnxruntime is faster). Requests are
JSON both ways, unless `--binary`: then every input and the output travel
as raw bytes in the binary extension, as tritonclient sends them by default.

With `--baseline-handler PATH`, each model is also imported with that
build of the ONNX handler (an older one, say) and served by the same server,
as a third side taking its turn: the table then shows what a handler change
did, next to onnxruntime, in one run. With `--baseline-binary PATH`, the
third side is a second server, that build of `edgeserve` (an older one),
serving the same imports: what a host or kernel change did. Besides the
ratio of the medians, the table then gives the median of the turns' ratios
with its 95% interval. With `--no-onnxruntime-turns` as well, onnxruntime
only checks the answers and the two edgeserve sides take turns alone, so
neither finds the caches emptied by onnxruntime's turn.

Usage:
    cargo build --release -p edgeserve
    (cd plugins && cargo build --release --target wasm32-wasip2 -p onnx)
    python3 bench/onnx_zoo_vs_ort.py [--threads N] [--repeats N]
        [--baseline-handler onnx.wasm | --baseline-binary OLD/edgeserve [--no-onnxruntime-turns]]
        [--only NAME] [--binary]
"""

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import tempfile

# First: it sets OMP_WAIT_POLICY before anything loads an OpenMP runtime.
import harness

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402

from onnx_vs_ort import import_model, oip  # noqa: E402


class Field(torch.nn.Module):
    """`model`'s output field `name`, so the export has one output."""

    def __init__(self, model, name):
        super().__init__()
        self.model, self.name = model.eval(), name

    def forward(self, x):
        return getattr(self.model(x), self.name)


class Lstm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(32, 256, num_layers=2, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


class MishCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for out, stride in ((32, 2), (64, 1), (64, 1), (64, 1)):
            layers += [torch.nn.Conv2d(c, out, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(out), torch.nn.Mish()]
            c = out
        self.body = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        return self.body(x)


def mobilenet(model):
    """`model` with torchvision's conv init and BatchNorm statistics of a
    trained net's scale: transformers' default init shrinks the activations
    layer by layer into denormals (about 1e-28 at the output), which no
    trained model holds and which x86 computes on far slower."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(1, 2)
                m.weight.uniform_(0.5, 1)
                m.bias.uniform_(-0.1, 0.1)
    return model


def binary_request(inputs):
    """`inputs` ({name: numpy array}) as a request in the binary extension,
    asking for the output `y` in it too: (body, headers)."""
    kinds = {"float32": "FP32", "int64": "INT64"}
    head = json.dumps({
        "inputs": [{"name": n, "shape": list(a.shape), "datatype": kinds[str(a.dtype)],
                    "parameters": {"binary_data_size": a.nbytes}} for n, a in inputs.items()],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }).encode()
    data = b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values())
    return head + data, {"content-type": "application/octet-stream",
                         "inference-header-content-length": str(len(head))}


def first_output(raw):
    """The first output of a response, JSON or in the binary extension, as
    float32s: its JSON header ends where the raw bytes begin."""
    header, end = json.JSONDecoder().raw_decode(raw.decode("latin-1"))
    out = header["outputs"][0]
    if "data" in out:
        return np.array(out["data"], np.float32)
    return np.frombuffer(raw[end:end + out["parameters"]["binary_data_size"]], np.float32)


def export(net, example, path, input_name, axes):
    torch.onnx.export(net.eval(), (example,), path, input_names=[input_name], output_names=["y"],
                      dynamic_axes={input_name: axes, "y": axes}, opset_version=17, dynamo=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-handler", type=pathlib.Path,
                          help="an ONNX handler component to serve each model with as well, for comparison")
    baseline.add_argument("--baseline-binary", type=pathlib.Path,
                          help="an edgeserve binary to serve the same imports with as well, for comparison")
    parser.add_argument("--only", help="run only the models whose name contains this (say lstm)")
    parser.add_argument("--binary", action="store_true",
                        help="send inputs and take the output as raw bytes (the binary extension), not JSON")
    parser.add_argument("--no-onnxruntime-turns", action="store_true",
                        help="with a baseline: only the edgeserve sides take turns (onnxruntime still "
                             "checks the answers), so neither finds its caches emptied by onnxruntime")
    args = parser.parse_args()
    if args.no_onnxruntime_turns and not (args.baseline_handler or args.baseline_binary):
        parser.error("--no-onnxruntime-turns compares against a baseline: give one")

    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, MobileNetV2Config, MobileNetV2Model

    torch.manual_seed(0)
    work = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-bench-zoo-"))
    files = {"mobilenet-v2": work / "mobilenet.onnx", "gpt2-6x384": work / "gpt2.onnx",
             "bert-base": work / "bert.onnx", "lstm-2x256": work / "lstm.onnx", "mish-cnn": work / "mish.onnx"}
    export(Field(mobilenet(MobileNetV2Model(MobileNetV2Config())), "pooler_output"), torch.randn(1, 3, 224, 224),
           files["mobilenet-v2"], "pixel_values", {0: "batch"})
    gpt2 = GPT2Model(GPT2Config(n_layer=6, n_embd=384, n_head=6, vocab_size=8000, bos_token_id=0, eos_token_id=0))
    # An empty cache skips transformers' packed-sequence check (torch.diff has no export).
    gpt2.forward = (lambda f: lambda ids: f(input_ids=ids, use_cache=True))(gpt2.forward)
    export(Field(gpt2, "last_hidden_state"), torch.randint(0, 8000, (1, 64)), files["gpt2-6x384"],
           "input_ids", {0: "batch", 1: "sequence"})
    export(Field(BertModel(BertConfig()), "last_hidden_state"), torch.randint(0, 30522, (1, 64)),
           files["bert-base"], "input_ids", {0: "batch", 1: "sequence"})
    export(Lstm(), torch.randn(1, 50, 32), files["lstm-2x256"], "x", {0: "batch", 1: "steps"})
    export(MishCnn(), torch.randn(1, 3, 112, 112), files["mish-cnn"], "image", {0: "batch"})

    if args.only:
        files = {m: p for m, p in files.items() if args.only in m}
    binary = harness.find_binary()
    repo = work / "repo"
    names = list(files)
    for name, path in files.items():
        import_model(binary, path, name, repo)
        if args.baseline_handler:
            import_model(binary, path, f"{name}-baseline", repo, args.baseline_handler)
            names.append(f"{name}-baseline")
    sessions = {m: harness.ort_session(str(p), args.threads) for m, p in files.items()}
    servers = [harness.Server(binary, repo, names, args.threads, timeout=300)]
    if args.baseline_binary:
        servers.append(harness.Server(args.baseline_binary, repo, names, args.threads, timeout=300))
    clients = [harness.Client(server.url) for server in servers]
    baseline = args.baseline_handler or args.baseline_binary
    rng = np.random.default_rng(0)
    cases = [
        ("MobileNetV2, 224x224", "mobilenet-v2", 1, {"pixel_values": rng.random((1, 3, 224, 224), np.float32)}),
        ("MobileNetV2, 224x224", "mobilenet-v2", 8, {"pixel_values": rng.random((8, 3, 224, 224), np.float32)}),
        ("GPT-2 6x384, 64 tokens", "gpt2-6x384", 1, {"input_ids": rng.integers(0, 8000, (1, 64))}),
        ("GPT-2 6x384, 64 tokens", "gpt2-6x384", 8, {"input_ids": rng.integers(0, 8000, (8, 64))}),
        ("LSTM 2x256, 50 steps", "lstm-2x256", 1, {"x": rng.standard_normal((1, 50, 32), np.float32)}),
        ("LSTM 2x256, 50 steps", "lstm-2x256", 8, {"x": rng.standard_normal((8, 50, 32), np.float32)}),
        ("Mish CNN, 112x112", "mish-cnn", 1, {"image": rng.standard_normal((1, 3, 112, 112), np.float32)}),
        ("Mish CNN, 112x112", "mish-cnn", 8, {"image": rng.standard_normal((8, 3, 112, 112), np.float32)}),
        # Last, so that the cases above draw the same inputs as before it came.
        ("BERT-base 12x768, 64 tokens", "bert-base", 1, {"input_ids": rng.integers(0, 30522, (1, 64))}),
        ("BERT-base 12x768, 64 tokens", "bert-base", 8, {"input_ids": rng.integers(0, 30522, (8, 64))}),
    ]
    rows = []
    try:
        for label, model, batch, inputs in [c for c in cases if c[1] in files]:
            body, headers = binary_request(inputs) if args.binary else (oip(inputs), None)
            want = sessions[model].run(None, inputs)[0]
            # (client, model name) of each edgeserve side, this build first.
            served = [(client, model) for client in clients]
            if args.baseline_handler:
                served.append((clients[0], f"{model}-baseline"))
            delta = 0.0
            for client, name in served:
                got = first_output(client.post(name, body, headers))
                off = float(np.abs(got.reshape(want.shape) - want).max())
                if off > 1e-3:
                    sys.exit(f"{label} batch {batch}: {name} differs from onnxruntime by {off:.3g}")
                delta = max(delta, off)
            fns = [] if args.no_onnxruntime_turns else [lambda: sessions[model].run(None, inputs)]
            fns += [lambda client=client, name=name: client.post(name, body, headers) for client, name in served]
            times = harness.timed(fns, args.repeats, warmup=3)
            if args.no_onnxruntime_turns:
                times.insert(0, None)
            ort = statistics.median(times[0]) * 1e3 if times[0] else float("nan")
            p50 = [statistics.median(t) * 1e3 for t in times[1:]]
            cells = f"| {label} | {batch} | {p50[0]:.2f} | {ort:.2f} | {p50[0] / ort:.2f}× |"
            if baseline:
                # Turn by turn, so the machine's drift cancels: this side's
                # time over the baseline's (harness.paired_ratio).
                paired = harness.paired_ratio(times[1], times[2])
                cells += (f" {p50[1]:.2f} | {p50[1] / ort:.2f}× | {p50[0] / p50[1]:.3f} |"
                          f" {paired[0]:.3f} [{paired[1]:.3f}, {paired[2]:.3f}] |")
            rows.append(f"{cells} {delta:.1e} |")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work)
    print(f"threads: {args.threads}, repeats: {args.repeats}, onnxruntime {onnxruntime.__version__}"
          f"{' (answers only, no turns)' if args.no_onnxruntime_turns else ''}, "
          f"requests {'in the binary extension' if args.binary else 'JSON'}\n")
    if baseline:
        print(f"baseline {'handler' if args.baseline_handler else 'binary'}: {baseline}\n")
        print("| model | batch | edgeserve p50 ms | onnxruntime p50 ms | ratio | baseline p50 ms | "
              "its ratio | edgeserve ÷ baseline | per turn [95%] | max abs Δ |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print("| model | batch | edgeserve p50 ms | onnxruntime p50 ms | ratio | max abs Δ |")
        print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
