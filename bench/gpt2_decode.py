#!/usr/bin/env python3
"""Token-by-token decoding at GPT-2 small's size: the bundled `gpt2` plugin
serving a randomly initialised 124M-parameter checkpoint (12 layers, 12
heads, width 768, the 50257-row tied LM head; seeded, written to a temporary
model repository with the bundled tokenizer), against Hugging Face
transformers' `generate` (greedy, KV cache) on the same weights in-process.

The bundled checkpoint is tiny (it fits in L2), so it cannot show what a
real one costs: each new token reads every weight once, about 500 MB, with
one activation row. Real weights cannot be downloaded here; the speed of
these products does not depend on the values.

Sides take turns request by request: edgeserve (`--b`, default the release
binary), optionally a second build (`--a`, e.g. the tree before a change),
and the reference with the same thread count. Each request is a 16-token
prompt and `--tokens` new tokens. Prints p50 and mean per request, new
tokens/s at the p50, and the paired ratio of each side to edgeserve.

    python3 bench/gpt2_decode.py [--a OLD_BINARY] [--b BINARY] [--tokens 32] [--requests 10] [--threads 2]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import harness  # first: sets OMP_WAIT_POLICY before torch loads
from models import gpt2_body

PROMPT = "Alice was beginning to get very tired of sitting by her sister on the bank"


def write_model(repository):
    """A GPT-2 small-sized `gpt2` model folder under `repository`, from the
    bundled one's component, config and tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    bundled = harness.MODELS / "gpt2"
    folder = repository / "gpt2"
    (folder / "1").mkdir(parents=True)
    harness.link_model_files("gpt2", folder)
    for name in ["vocab.json", "merges.txt"]:
        shutil.copy(bundled / "1" / name, folder / "1" / name)
    wasm = bundled / "1" / "model.wasm"
    shutil.copy(wasm if wasm.exists() else harness.find_plugin("gpt2"), folder / "1" / "model.wasm")
    eos = json.loads((bundled / "1" / "vocab.json").read_text())["<|endoftext|>"]
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config).eval()
    weights = {name: t.detach().contiguous() for name, t in model.transformer.state_dict().items()}
    save_file(weights, str(folder / "1" / "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(str(folder / "1" / "config.json"))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", help="a second edgeserve binary (the baseline build)")
    parser.add_argument("--b", help="edgeserve binary (default: $CARGO_TARGET_DIR or target/release)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--requests", type=int, default=10, help="timed requests per side")
    parser.add_argument("--threads", type=int, default=2, help="compute threads for every side")
    args = parser.parse_args()

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    binaries = {"edgeserve": args.b or harness.find_binary()}
    if args.a:
        binaries["edgeserve (--a)"] = args.a
    servers = {}
    with tempfile.TemporaryDirectory() as work:
        repository = Path(work)
        model = write_model(repository)
        try:
            for label, binary in binaries.items():
                servers[label] = harness.Server(binary, repository, ["gpt2"], args.threads)
            clients = {label: harness.Client(s.url) for label, s in servers.items()}
            body = gpt2_body(PROMPT, args.tokens)
            first = clients["edgeserve"].infer("gpt2", body)
            ids = torch.tensor([[t for t in first["prompt_tokens"] if t >= 0]])
            ours = [t for t in first["tokens"] if t >= 0]

            def reference():
                with torch.inference_mode(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(ours),
                                          min_new_tokens=len(ours), do_sample=False, pad_token_id=0)

            theirs = reference()[0, ids.shape[1]:].tolist()
            for label, client in clients.items():
                other = [t for t in client.infer("gpt2", body)["tokens"] if t >= 0]
                if other != ours:
                    sys.exit(f"{label} generated other tokens than edgeserve: {other} vs {ours}")
            raw = json.dumps(body).encode()
            sides = {label: (lambda c=client: c.post("gpt2", raw)) for label, client in clients.items()}
            sides["transformers generate"] = reference
            times = harness.timed(list(sides.values()), args.requests, warmup=1)
        finally:
            for server in servers.values():
                server.stop()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"`python3 bench/gpt2_decode.py --tokens {args.tokens} --requests {args.requests} "
          f"--threads {args.threads}` (load {load})\n")
    print(f"GPT-2 small shapes, random weights; prompt {ids.shape[1]} tokens, {len(ours)} new; "
          f"same tokens as transformers: {ours == theirs}\n")
    print("| side | p50 | mean | new tokens/s (p50) | side ÷ edgeserve, paired [95% CI] |")
    print("|---|---:|---:|---:|---:|")
    mine = times[0]
    for label, series in zip(sides, times):
        p50 = statistics.median(series)
        ratio, low, high = harness.paired_ratio(series, mine)
        print(f"| {label} | {1000 * p50:.0f} ms | {1000 * statistics.mean(series):.0f} ms | "
              f"{len(ours) / p50:.1f} | {ratio:.3f} [{low:.3f}, {high:.3f}] |")


if __name__ == "__main__":
    main()
