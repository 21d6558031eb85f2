"""Memory held by the server across unload/load cycles of one model, with
nothing else running: a leak in loading or unloading grows it by the same
amount every cycle, where the mixed soak (bench/soak.py) blurs it among
requests whose working sets swing by hundreds of MiB.

Each cycle unloads `cycled` (a second copy of `linear`), loads it again and
sends it one request, which must succeed. Memory held (resident less freed
lazily, as bench/soak.py samples it) is printed every `--every` cycles after
1 s idle; the verdict compares the last sample with the one after the first
`--every` cycles (the first loads warm the compile cache and the pools).

    python3 bench/reload_memory.py [--cycles 3000] [--every 250] [--binary BIN]
"""

import argparse
import json
import sys
import time

import soak
from harness import Server, find_binary

# What the last sample may exceed the first after warm-up by.
BOUND = 0.05


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--binary", default=None)
    args = parser.parse_args()
    binary = args.binary or str(find_binary())
    server = Server(binary, soak.repository(), ["linear", "cycled"], 2)
    port, pid = server.port, server.proc.pid
    request = json.dumps(soak.LINEAR).encode()
    steps = [("/v2/repository/models/cycled/unload", b"{}"),
             ("/v2/repository/models/cycled/load", b"{}"),
             ("/v2/models/cycled/infer", request)]
    print(f"{binary}, {args.cycles} cycles\n\n| cycle | s | held (MiB) | RSS (MiB) | open fds |\n|---:|---:|---:|---:|---:|")
    samples, start = [], time.time()
    try:
        for cycle in range(args.cycles + 1):
            if cycle % args.every == 0:
                time.sleep(1)
                held, rss, fds = soak.sample(pid)
                samples.append(held)
                print(f"| {cycle} | {time.time() - start:.1f} | {held:.1f} | {rss:.1f} | {fds} |", flush=True)
            for path, body in steps:
                status = soak.send(port, "POST", path, body, "application/json")[0]
                if status != 200:
                    sys.exit(f"cycle {cycle}: POST {path} answered {status}")
    finally:
        server.stop()
    first, last = samples[min(1, len(samples) - 1)], samples[-1]
    ok = last <= first * (1 + BOUND)
    print(f"\n{'pass' if ok else 'FAIL'}: held {first:.1f} MiB after {args.every} cycles, "
          f"{last:.1f} MiB after {args.cycles} (bound +{BOUND:.0%})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
