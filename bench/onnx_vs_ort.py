#!/usr/bin/env python3
"""ONNX models served by edgeserve's generic ONNX handler (`edgeserve import`,
CPU backend, over HTTP) against onnxruntime in-process on the same files, in
the same run, with the same number of threads, at batch 1 and batch 32:

* the digits CNN (tests/data/onnx/cnn_digits.onnx: conv/bn/relu/pool/fc on
  8x8 images);
* a stage of a ResNet-sized CNN (`conv_stack` below: four 3x3 convolutions
  with bias and ReLU, 3 → 64 → 64 → 64 → 64 channels on 56x56 images, then
  global average pooling), random weights;
* all-MiniLM-L6-v2 built from the shipped weights as torch exports it
  (tests/python/minilm_onnx.py: BERT, mean pooling, L2 normalization) on
  the token ids the hand-written `minilm` plugin makes of 32 everyday
  sentences. The plugin itself (text in, same host kernels, hand-written
  graph) is timed too, to tell the generic handler's cost from the kernels'.
* the same graph ending at the last hidden state (`--last-hidden-state`, as
  optimum exports it for feature extraction), imported twice: as imported,
  and with `padding_positions = "zeros"`, which lets a padded batch run on its
  real tokens (the padding rows then read 0; the check compares real tokens
  only);
* the same model exported by `torch.onnx.export` itself
  (bench/minilm_torch_export.py: transformers' SDPA attention, shapes
  computed at run time), on the same token ids, when torch and
  transformers are installed.

edgeserve's figures are what a client sees (JSON request pre-encoded, HTTP on
loopback over one keep-alive connection, the response read); onnxruntime's are
`InferenceSession.run` alone (intra-op threads not spinning, as a server
shares its cores), so the ratio is conservative for edgeserve.
"in instance" is the server's own mean of the time the request ran in the
handler instance (its compute_duration_seconds histogram over the case's
requests): the guest and the host kernels; the rest of edgeserve's time is
JSON, HTTP and the request checks.
The sides take turns request by request (harness.timed), after each case's
answers are checked against onnxruntime's (the run stops past 1e-4). Prints a
markdown table of p50 latencies, the ratio edgeserve / onnxruntime (above 1:
onnxruntime is faster) and the largest difference of the answers.

Usage:
    scripts/fetch-minilm.sh
    cargo build --release -p edgeserve
    (cd plugins && cargo build --release --target wasm32-wasip2 -p onnx -p minilm)
    python3 bench/onnx_vs_ort.py [--threads N] [--repeats N]
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

# First: it sets OMP_WAIT_POLICY before anything loads an OpenMP runtime.
import harness

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from sentences import SENTENCES  # noqa: E402

CNN = harness.REPO / "tests" / "data" / "onnx" / "cnn_digits.onnx"


def import_model(binary, model, name, repo, handler=None):
    """`edgeserve import` of `model` as `name` into `repo`, with the ONNX
    handler at `handler` (by default the one built last)."""
    handler = handler or harness.find_plugin("onnx")
    out = subprocess.run([str(binary), "import", str(model), "--name", name, "--repository", str(repo),
                          "--handler", str(handler)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"import of {model} failed:\n{out.stderr}")
    print(out.stdout.strip(), file=sys.stderr)


def conv_stack(out):
    """Writes the CNN stage the docstring describes to `out`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "image"
    for i, c in enumerate([3, 64, 64, 64]):
        weights += [numpy_helper.from_array((rng.standard_normal((64, c, 3, 3)) * 0.05).astype(np.float32), f"w{i}"),
                    numpy_helper.from_array((rng.standard_normal(64) * 0.1).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"conv{i}"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
                  helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"])]
        x = f"relu{i}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["features"], axis=1)]
    graph = helper.make_graph(nodes, "conv-stack",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 56, 56])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 64])],
                              initializer=weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out)


def oip(inputs):
    """A pre-encoded OIP request body for {name: numpy array}."""
    kinds = {"float32": "FP32", "int64": "INT64"}
    return json.dumps({"inputs": [
        {"name": n, "shape": list(a.shape), "datatype": kinds[str(a.dtype)], "data": a.ravel().tolist()}
        for n, a in inputs.items()]}).encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    binary = harness.find_binary()
    work = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-bench-onnx-"))
    minilm_onnx = work / "minilm.onnx"
    subprocess.run([sys.executable, str(harness.REPO / "tests" / "python" / "minilm_onnx.py"), str(minilm_onnx)],
                   check=True, capture_output=True)
    hidden_onnx = work / "minilm_hidden.onnx"
    subprocess.run([sys.executable, str(harness.REPO / "tests" / "python" / "minilm_onnx.py"), str(hidden_onnx),
                    "--last-hidden-state"], check=True, capture_output=True)
    stack_onnx = work / "conv_stack.onnx"
    conv_stack(stack_onnx)
    files = {"cnn": CNN, "conv-stack": stack_onnx, "minilm-onnx": minilm_onnx, "minilm-hidden": hidden_onnx,
             "minilm-hidden-zeros": hidden_onnx}
    torch_onnx = work / "minilm_torch.onnx"
    exported = subprocess.run([sys.executable, str(harness.REPO / "bench" / "minilm_torch_export.py"),
                               str(torch_onnx)], capture_output=True, text=True)
    if exported.returncode == 0:
        files["minilm-torch"] = torch_onnx
    else:
        print(f"no torch export (torch and transformers installed?):\n{exported.stderr[-500:]}", file=sys.stderr)
    repo = work / "repo"
    for name, path in files.items():
        import_model(binary, path, name, repo)
    with open(repo / "minilm-hidden-zeros" / "config.toml", "a") as config:
        config.write('[parameters]\npadding_positions = "zeros"\n')
    harness.model_folder("minilm", repo / "minilm")

    sessions = {m: harness.ort_session(str(p), args.threads) for m, p in files.items()}

    server = harness.Server(binary, repo, [*files, "minilm"], args.threads, timeout=120)
    client = harness.Client(server.url)
    rows = []
    try:
        rng = np.random.default_rng(0)
        for batch in (1, 32):
            image = {"image": rng.random((batch, 1, 8, 8), dtype=np.float32)}
            stage = {"image": rng.random((batch, 3, 56, 56), dtype=np.float32)}
            sentences = SENTENCES[:batch]
            text = json.dumps({"inputs": [{"name": "text", "shape": [batch], "datatype": "BYTES",
                                           "data": sentences}]}).encode()
            made = {o["name"]: o for o in json.loads(client.post("minilm", text))["outputs"]}
            ids = np.array(made["input_ids"]["data"], dtype=np.int64).reshape(made["input_ids"]["shape"])
            tokens = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64),
                      "token_type_ids": np.zeros_like(ids)}
            cases = [("CNN", "cnn", image, None), ("CNN stage, 56x56", "conv-stack", stage, None),
                     ("MiniLM", "minilm-onnx", tokens, text),
                     ("MiniLM, last hidden state", "minilm-hidden", tokens, None),
                     ("MiniLM, last hidden state, zeros at padding", "minilm-hidden-zeros", tokens, None)]
            if "minilm-torch" in files:
                cases.append(("MiniLM, torch export", "minilm-torch", tokens, text))
            for label, model, inputs, text_body in cases:
                body = oip(inputs)
                # Same answers first: a fast wrong answer is not a result.
                got = json.loads(client.post(model, body))["outputs"][0]
                want = sessions[model].run(None, inputs)[0]
                got = np.array(got["data"], np.float32).reshape(want.shape)
                if model.endswith("-zeros"):
                    padding = tokens["attention_mask"] == 0
                    if np.any(got[padding] != 0):
                        sys.exit(f"{label} batch {batch}: a padding row is not zeros")
                    got[padding] = want[padding]
                delta = float(np.abs(got - want).max())
                if delta > 1e-4:
                    sys.exit(f"{label} batch {batch}: edgeserve differs from onnxruntime by {delta:.3g}")
                fns = [lambda: client.post(model, body), lambda: sessions[model].run(None, inputs)]
                if text_body is not None:
                    fns.append(lambda: client.post("minilm", text_body))
                before = harness.histogram(server.url, "compute_duration_seconds", model)
                times = harness.timed(fns, args.repeats, warmup=3)
                after = harness.histogram(server.url, "compute_duration_seconds", model)
                inside = (after[0] - before[0]) / max(after[1] - before[1], 1) * 1e3
                p50 = [statistics.median(t) * 1e3 for t in times]
                plugin = f"{p50[2]:.2f}" if len(p50) > 2 else "–"
                shape = "x".join(map(str, next(iter(inputs.values())).shape))
                rows.append(f"| {label} | {batch} | {shape} | {p50[0]:.2f} | {inside:.2f} | {p50[1]:.2f} "
                            f"| {p50[0] / p50[1]:.2f}× | {plugin} | {delta:.1e} |")
    finally:
        server.stop()
        shutil.rmtree(work)
    print(f"threads: {args.threads}, repeats: {args.repeats}, onnxruntime {onnxruntime.__version__}\n")
    print("| model | batch | input | edgeserve ONNX p50 ms | in instance, mean ms | onnxruntime p50 ms | ratio "
          "| minilm plugin p50 ms | max abs Δ vs onnxruntime |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
