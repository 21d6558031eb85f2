#!/usr/bin/env python3
"""End-to-end latency of every served example model: edgeserve against a
reference implementation on the same weights, and edgeserve's CPU backend
against its GPU backend, all in one run on one machine.

Table 1 (models): for each model, edgeserve over HTTP (OIP JSON, one
keep-alive connection, `--device cpu`) against a reference run in-process on
the same weights, the two taking turns request by request:

* `digits`: scikit-learn `MLPClassifier.predict_proba` (the trained weights
  put into the estimator), batch 1 and 64;
* `recommender`: numpy (`U[ids] @ I.T + b`, `argpartition`, sort), top-5 for
  3 users and top-10 for all 200;
* `minilm`: sentence-transformers `encode` (PyTorch), batch 1 and 32;
* `gpt2`: Hugging Face transformers `GPT2LMHeadModel.generate` (greedy,
  KV cache) on the bundled checkpoint: a 16-token prompt, 64 new tokens.

edgeserve's figures include everything a client sees but its own JSON work
(the request body is encoded once; the timed part sends it and reads the
response's bytes): HTTP on loopback, the server's JSON, the host's checks, the
guest's tokenizer, the response; the references' are
the computation alone (gpt2's reference is handed token ids), so the
comparison is conservative for edgeserve. `linear` ([4,1]) is timed alone as
the floor: what a request costs with (almost) no model behind it. Each row
checks that both sides give the same answer before timing.

Table 2 (backends): the same requests against a second server on
`--device gpu`, alternating request by request with the CPU server. On a
machine without a hardware GPU that is Mesa's lavapipe, a software rasterizer
on the same cores: then the figure is the GPU path's correctness and
overhead, not GPU speed. `--no-gpu` skips it.

Both sides use `--threads` compute threads (rayon's pool in the server via
RAYON_NUM_THREADS; `torch.set_num_threads`). Prints markdown tables: p50 and
mean per request, items/s at the p50, and the ratio of the p50s.

Usage:
    scripts/fetch-minilm.sh
    CARGO_TARGET_DIR= scripts/build-plugins.sh
    cargo build --release -p edgeserve
    python3 bench/models.py [--requests 100] [--gpu-requests 10] [--threads N]
"""

import argparse
import json
import os
import statistics
import sys
import time
import warnings

# First: it sets OMP_WAIT_POLICY (PASSIVE unless exported) before anything
# loads torch or an OpenMP runtime, so both scripts measure PyTorch alike.
import harness
from harness import MODELS
import minilm_vs_torch as mt  # (its sentences, cosine and minilm loader)

import numpy as np

GPT2_TEXT = (
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading"
)


# --- requests and references ----------------------------------------------

def digits_case(batch):
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import LabelBinarizer
    from safetensors.numpy import load_file

    w = load_file(str(MODELS / "digits" / "1" / "model.safetensors"))
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu")
    clf.coefs_ = [w["fc1.weight"].T.copy(), w["fc2.weight"].T.copy(), w["fc3.weight"].T.copy()]
    clf.intercepts_ = [w["fc1.bias"], w["fc2.bias"], w["fc3.bias"]]
    clf.n_layers_, clf.n_outputs_, clf.out_activation_ = 4, 10, "softmax"
    clf.n_features_in_ = 64
    clf.classes_ = np.arange(10)
    clf._label_binarizer = LabelBinarizer().fit(np.arange(10))
    x = load_digits().data[:batch].astype(np.float32)
    body = {"inputs": [{"name": "pixels", "shape": [batch, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}

    def check(out):
        ref = clf.predict_proba(x)
        return f"max abs Δp {np.abs(np.array(out['probabilities']).reshape(batch, 10) - ref).max():.1e}"

    return "digits", body, lambda: clf.predict_proba(x), check, batch, "images"


def recommender_case(users, k):
    from safetensors.numpy import load_file

    w = load_file(str(MODELS / "recommender" / "1" / "model.safetensors"))
    U, I, b = w["user_factors"], w["item_factors"], w["item_bias"]
    ids = np.array([0, 1, 42] if users == 3 else list(range(users)))
    body = {"inputs": [{"name": "user_id", "shape": [len(ids)], "datatype": "INT64", "data": ids.tolist()}],
            "parameters": {"k": k}}

    def ref():
        scores = U[ids] @ I.T + b
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(scores, top, 1)
        order = np.argsort(-part, axis=1, kind="stable")
        return np.take_along_axis(top, order, 1), np.take_along_axis(part, order, 1)

    def check(out):
        items, _ = ref()
        same = (np.array(out["items"]).reshape(len(ids), k) == items).mean()
        return f"same top-{k} items {100 * same:.0f}%"

    return "recommender", body, ref, check, len(ids), "users", f"recommender ({len(ids)} users, top-{k})"


def minilm_case(model, batch):
    import torch

    sentences = mt.SENTENCES[:batch]
    body = {"inputs": [{"name": "text", "shape": [batch], "datatype": "BYTES", "data": sentences}],
            "outputs": [{"name": "embedding"}]}

    def ref():
        with torch.inference_mode():
            return model.encode(sentences, batch_size=batch)

    def check(out):
        theirs = ref()
        e = out["embedding"]
        worst = min(mt.cosine(e[i * 384:(i + 1) * 384], theirs[i].tolist()) for i in range(batch))
        return f"worst cosine {worst:.6f}"

    return "minilm", body, ref, check, batch, "sentences"


def gpt2_prompt(client, tokens):
    """The longest prefix of GPT2_TEXT (in words) that is at most `tokens` tokens."""
    words = GPT2_TEXT.split()
    best = words[0]
    for n in range(1, len(words) + 1):
        text = " ".join(words[:n])
        out = client.infer("gpt2", gpt2_body(text, 0))
        if len(out["prompt_tokens"]) > tokens:
            break
        best = text
    return best


def gpt2_body(text, new_tokens):
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
            "parameters": {"max_tokens": new_tokens, "return_tokens": True}}


def gpt2_case(model, client, prompt_tokens, new_tokens):
    import torch

    text = gpt2_prompt(client, prompt_tokens)
    first = client.infer("gpt2", gpt2_body(text, new_tokens))
    ids = torch.tensor([[t for t in first["prompt_tokens"] if t >= 0]])
    generated = [t for t in first["tokens"] if t >= 0]
    body = gpt2_body(text, new_tokens)

    def ref():
        with torch.inference_mode():
            return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                  do_sample=False, eos_token_id=0, pad_token_id=0)

    def check(out):
        theirs = ref()[0, ids.shape[1]:].tolist()
        ours = [t for t in out["tokens"] if t >= 0]
        return f"prompt {ids.shape[1]} tok, {len(ours)} new; same tokens as HF: {ours == theirs}"

    label = f"gpt2 ({ids.shape[1]}+{len(generated)} tok)"
    return "gpt2", body, ref, check, len(generated), "tokens", label


def load_gpt2():
    import transformers
    from transformers import GPT2LMHeadModel

    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GPT2LMHeadModel.from_pretrained(str(MODELS / "gpt2" / "1"))
    return model.eval()


# --- reporting -------------------------------------------------------------

def ms(t):
    return f"{1000 * t:.2f}" if t < 0.01 else f"{1000 * t:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="compute threads for all (default: all cores)")
    parser.add_argument("--requests", type=int, default=100, help="timed requests per row of table 1 (big batches get a quarter)")
    parser.add_argument("--gpu-requests", type=int, default=10, help="timed requests per row of table 2")
    parser.add_argument("--binary", help="edgeserve binary (default: $CARGO_TARGET_DIR or target/release)")
    parser.add_argument("--no-gpu", action="store_true", help="skip table 2 (--device gpu)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    # numpy's (and scipy's) OpenBLAS: one thread. These matrices are tiny, and
    # two OpenBLAS threads on a shared 2-core machine were up to 100x slower
    # than one (0.04 ms vs 0.17-16 ms for [200,16]x[16,500]): one thread is the
    # stronger baseline. torch's pool (libgomp) is not touched.
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")
    binary = args.binary or harness.find_binary()
    models = ["linear", "digits", "recommender", "minilm", "gpt2"]
    servers = []
    started = time.time()
    try:
        cpu = harness.Server(binary, MODELS, models, args.threads, device="cpu")
        servers.append(cpu)
        client = harness.Client(cpu.url)
        minilm = mt.reference.load()
        gpt2 = load_gpt2()

        cases = [
            (digits_case(1), args.requests),
            (digits_case(64), args.requests),
            (recommender_case(3, 5), args.requests),
            (recommender_case(200, 10), args.requests),
            (minilm_case(minilm, 1), args.requests),
            (minilm_case(minilm, 32), max(args.requests // 4, 3)),
            (gpt2_case(gpt2, client, 16, 64), max(args.requests // 2, 3)),
        ]
        rows = []
        for case, repeats in cases:
            model, body, ref, check, items, unit = case[:6]
            label = case[6] if len(case) > 6 else f"{model} ({items} {unit if items > 1 else unit[:-1]})"
            note = check(client.infer(model, body))
            raw = json.dumps(body).encode()
            edge, theirs = harness.timed([lambda: client.post(model, raw), ref], repeats, warmup=3)
            rows.append((label, repeats, edge, theirs, items, unit, note))
            print(f"  {label}: done ({time.time() - started:.0f} s)", file=sys.stderr)
        linear_body = {"inputs": [{"name": "x", "shape": [4, 1], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        linear_raw = json.dumps(linear_body).encode()
        (floor,) = harness.timed([lambda: client.post("linear", linear_raw)], args.requests, warmup=3)

        dev_rows = []
        if not args.no_gpu:
            gpu = harness.Server(binary, MODELS, models[1:], args.threads, device="gpu")
            servers.append(gpu)
            gclient = harness.Client(gpu.url)
            print(f"  gpu server ready ({time.time() - started:.0f} s)", file=sys.stderr)
            dev_cases = [
                ("digits (1 image)", "digits", digits_case(1)[1], "probabilities"),
                ("recommender (3 users, top-5)", "recommender", recommender_case(3, 5)[1], "items"),
                ("minilm (1 sentence)", "minilm", minilm_case(minilm, 1)[1], "embedding"),
                ("gpt2 (16+16 tok)", "gpt2", gpt2_body(cases[-1][0][1]["inputs"][0]["data"][0], 16), "tokens"),
            ]
            for label, model, body, key in dev_cases:
                a, b = client.infer(model, body)[key], gclient.infer(model, body)[key]
                diff = float(np.abs(np.array(a, dtype=np.float64) - np.array(b, dtype=np.float64)).max())
                raw = json.dumps(body).encode()
                c, g = harness.timed([lambda: client.post(model, raw), lambda: gclient.post(model, raw)],
                                args.gpu_requests, warmup=1)
                dev_rows.append((label, args.gpu_requests, c, g, f"max abs Δ{key} {diff:.1e}"))
                print(f"  {label} gpu: done ({time.time() - started:.0f} s)", file=sys.stderr)
            adapter = [line for line in gpu.log_text().splitlines() if "adapter" in line.lower() or "gpu" in line.lower()]
    finally:
        for server in servers:
            server.stop()

    print(f"edgeserve (`--device cpu`, one keep-alive HTTP connection, OIP JSON) vs in-process references; "
          f"{args.threads} threads; torch {torch.__version__}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; load average at the end "
          f"{os.getloadavg()[0]:.2f}; {time.time() - started:.0f} s in all\n")
    print("| model (request) | requests | edgeserve p50 / mean (ms) | reference | reference p50 / mean (ms) "
          "| edgeserve items/s | reference items/s | reference / edgeserve (p50) | same answer |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")
    refname = {"digits": "scikit-learn MLP `predict_proba`", "recommender": "numpy dot + argpartition",
               "minilm": "sentence-transformers `encode`", "gpt2": "transformers `generate` (greedy)"}
    for label, repeats, edge, ref, items, unit, note in rows:
        e50, r50 = statistics.median(edge), statistics.median(ref)
        print(f"| {label} | {repeats} | {ms(e50)} / {ms(statistics.mean(edge))} | {refname[label.split()[0]]} "
              f"| {ms(r50)} / {ms(statistics.mean(ref))} | {items / e50:.0f} {unit}/s | {items / r50:.0f} {unit}/s "
              f"| {r50 / e50:.3g} | {note} |")
    print(f"| linear ([4,1], the HTTP floor) | {args.requests} | {ms(statistics.median(floor))} / "
          f"{ms(statistics.mean(floor))} | — | | | | | |")

    if dev_rows:
        print("\nSame requests, `--device cpu` vs `--device gpu` server, alternating request by request"
              + (f" (gpu log: {'; '.join(adapter)[:300]})" if adapter else "") + "\n")
        print("| model (request) | requests | cpu p50 / mean (ms) | gpu p50 / mean (ms) | gpu / cpu (p50) | agreement |")
        print("|---|---:|---:|---:|---:|---|")
        for label, repeats, c, g, note in dev_rows:
            c50, g50 = statistics.median(c), statistics.median(g)
            print(f"| {label} | {repeats} | {ms(c50)} / {ms(statistics.mean(c))} | {ms(g50)} / {ms(statistics.mean(g))} "
                  f"| {g50 / c50:.3g}× | {note} |")


if __name__ == "__main__":
    main()
