"""A GPU server's cold start, with and without the model's warm-up request.

    python3 bench/cold_start.py [--rounds 3] [--models digits,recommender] [--device gpu]

Each start gets an empty Mesa shader cache (MESA_SHADER_CACHE_DIR, a fresh
folder), as a fresh machine has, so a software driver (lavapipe) compiles
every kernel again. The two settings take turns, start by start: the shipped
config (`warmup = "warmup.json"`) and the same without its `warmup` line.
Both run with `timeout_ms` raised to 60 s, so that a first request without
warm-up completes and can be timed; the table says how it compares with the
shipped deadline. Printed per setting: seconds from spawning the server to
the model being ready, the first request's latency, and the median of the
next 20.
"""

import argparse
import os
import pathlib
import re
import shutil
import statistics
import tempfile
import time
import tomllib

import harness

REQUESTS = harness.REPO / "examples" / "requests"


def repository(work, model, warm):
    """`model` as shipped, or without its warm-up, under a 60 s deadline."""
    repo = work / f"{model}-{'warm' if warm else 'cold'}"
    harness.model_folder(model, repo / model, skip=("config.toml",))
    shipped = (harness.MODELS / model / "config.toml").read_text()
    text = re.sub(r"^timeout_ms = \d+$", "timeout_ms = 60000", shipped, flags=re.M)
    if not warm:
        text = re.sub(r"^warmup = .*$", "", text, flags=re.M)
    (repo / model / "config.toml").write_text(text)
    return repo


def start(binary, repo, model, device):
    """(server, seconds to ready, first latency, median of the next 20)."""
    body = (REQUESTS / f"{model}.json").read_bytes()
    os.environ["MESA_SHADER_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgeserve-mesa-")
    spawned = time.perf_counter()
    server = harness.Server(binary, repo, [model], threads=2, device=device)
    ready = time.perf_counter() - spawned
    client = harness.Client(server.url)
    started = time.perf_counter()
    client.post(model, body)
    first = time.perf_counter() - started
    steady = []
    for _ in range(20):
        started = time.perf_counter()
        client.post(model, body)
        steady.append(time.perf_counter() - started)
    server.stop()
    shutil.rmtree(os.environ.pop("MESA_SHADER_CACHE_DIR"))
    return ready, first, statistics.median(steady)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="digits,recommender")
    parser.add_argument("--device", default="gpu")
    args = parser.parse_args()
    binary = harness.find_binary()
    work = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-cold-"))
    print(f"load {os.getloadavg()[0]:.2f}, {args.rounds} rounds, `--device {args.device}`, "
          "each start with an empty Mesa shader cache\n")
    print("| model | warm-up | ready after (s) | first request (ms) | next 20, median (ms) | shipped timeout_ms |")
    print("|---|---|---:|---:|---:|---:|")
    for model in args.models.split(","):
        shipped = tomllib.loads((harness.MODELS / model / "config.toml").read_text())
        if "warmup" not in shipped:
            raise SystemExit(f"examples/models/{model}/config.toml has no warmup")
        repos = {warm: repository(work, model, warm) for warm in (False, True)}
        runs = {False: [], True: []}
        for turn in range(args.rounds):
            # Alternating which goes first.
            for warm in ((False, True) if turn % 2 == 0 else (True, False)):
                runs[warm].append(start(binary, repos[warm], model, args.device))
        for warm in (False, True):
            cell = lambda i, scale, fmt: ", ".join(fmt.format(r[i] * scale) for r in runs[warm])
            print(f"| {model} | {'on' if warm else 'off'} | {cell(0, 1, '{:.2f}')} | "
                  f"{cell(1, 1e3, '{:.0f}')} | {cell(2, 1e3, '{:.2f}')} | {shipped['timeout_ms']} |")
    print(f"\nload {os.getloadavg()[0]:.2f} at the end")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
