"""The whole server as an aarch64 edge node runs it: the cross-built
`edgeserve` under qemu-user, serving fresh builds of the example plugins,
answers every shipped request as the x86 build does.

    python3 tests/python/aarch64_serve.py AARCH64_BINARY [X86_BINARY]

Both servers serve the same repository (linear, digits, recommender,
minilm; gpt2's generation is left out: minutes under emulation) on
`--device cpu`. Every request is sent to both; the answers must name the
same outputs with the same datatypes and shapes, and their numbers agree
within 1e-5 of the larger magnitude (1e-5 absolute below 1): on aarch64
every op takes its portable path, which sums in another order than the x86
register tiles. Exits 1, naming the difference, on the first that does not.
"""

import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
import harness  # noqa: E402

MODELS = ["linear", "digits", "recommender", "minilm"]
TOLERANCE = 1e-5
# Emulated, cranelift compiles each component at a fraction of native speed.
START_TIMEOUT = 900

REQUESTS = {
    "linear": {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]},
    **{m: json.loads((harness.REPO / "examples" / "requests" / f"{m}.json").read_text())
       for m in ["digits", "recommender", "minilm"]},
}


def differences(ours, theirs, where):
    """Where two decoded answers differ beyond TOLERANCE."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if ours.keys() != theirs.keys():
            return [f"{where}: keys {sorted(ours)} against {sorted(theirs)}"]
        return [d for k in ours for d in differences(ours[k], theirs[k], f"{where}.{k}")]
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{where}: {len(ours)} items against {len(theirs)}"]
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in differences(a, b, f"{where}[{i}]")]
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(theirs, numbers) and not isinstance(ours, bool):
        if abs(ours - theirs) <= TOLERANCE * max(1.0, abs(ours), abs(theirs)):
            return []
    elif ours == theirs:
        return []
    return [f"{where}: {ours!r} against {theirs!r}"]


def main():
    emulated = pathlib.Path(sys.argv[1]).resolve()
    native = pathlib.Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else harness.find_binary()
    work = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-aarch64-"))
    repo = work / "models"
    for model in MODELS:
        harness.model_folder(model, repo / model)
    # harness.Server runs its binary as `BINARY serve ...`.
    wrapper = work / "edgeserve-aarch64"
    wrapper.write_text(f'#!/bin/sh\nexec qemu-aarch64 -L /usr/aarch64-linux-gnu "{emulated}" "$@"\n')
    wrapper.chmod(0o755)
    servers = {}
    try:
        servers["x86_64"] = harness.Server(native, repo, MODELS, threads=2)
        servers["aarch64"] = harness.Server(wrapper, repo, MODELS, threads=2, timeout=START_TIMEOUT)
        failed = False
        for model, request in REQUESTS.items():
            answers = {}
            for arch, server in servers.items():
                # Any status but 200 ends the run, naming it.
                answers[arch] = json.loads(harness.Client(server.url).post(model, json.dumps(request).encode()))
            found = differences(answers["aarch64"]["outputs"], answers["x86_64"]["outputs"], model)
            print(("FAIL " if found else "PASS ") + f"{model}: aarch64 answers as x86_64"
                  + "".join(f"\n  {d}" for d in found[:5]))
            failed |= bool(found)
        if failed:
            sys.exit(1)
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    os.environ.setdefault("RUST_LOG", "warn")
    main()
