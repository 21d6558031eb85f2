"""Soak and chaos run: one `edgeserve serve` over every example model for a
bounded time (default 20 min), under a mix of valid requests, malformed
requests, oversize bodies, clients that hang up mid-request or mid-stream,
and unload/load cycles, sampling the server's memory and open descriptors
every 10 s. Then a second server is stopped with SIGTERM under load.

    python3 bench/soak.py [--minutes 20] [--clients 4] [--memory-purge-ms 0] [--binary PATH]

Pass criteria, each printed with its figures (exit status 1 if one fails):
- the memory the server holds after the warm-up (the first quarter of the
  run, at most 5 min) grows at most 5%: its RSS less the pages it freed
  lazily (`LazyFree` in /proc/PID/smaps_rollup), which stay counted in RSS
  until the kernel takes them back under memory pressure (the allocator
  hands freed memory back with `MADV_FREE`: host/src/malloc.rs). It is
  measured with the load paused for 3 s at the end of the warm-up and
  stopped for 3 s at the end (under load a sample swings by the bodies in
  flight: an oversize one is read up to the 64 MiB limit);
  the lowest sample under load in the first and last third of the run after
  the warm-up is printed too. The soaked server hands freed pages back at
  once (`--memory-purge-ms 0`), so that what it holds is what it uses: with
  its default delay (1 s) the allocator keeps pages for reuse, and a sample
  with the load paused lands anywhere in a band some 300 MiB wide (175–556
  MiB under load in one 20-minute run, 160–226 MiB at 0; bench/RESULTS.md,
  session 53). `--memory-purge-ms 1000` soaks the shipped setting;
- open descriptors are flat: the count with the load stopped at the end is
  at most the count at the end of the warm-up with the load paused;
- no unexpected 5xx (a 503 with Retry-After, a model busy past its queue
  deadline, is overload, counted separately); every valid request answered
  with a 200;
- SIGTERM mid-load: every request whose connection was accepted before the
  signal gets its complete answer, connections after it are refused (not
  reset mid-request), and the server exits 0.

The model repository is a temporary copy of examples/models with the
components freshly built under plugins/target or $CARGO_TARGET_DIR.
"""

import argparse
import http.client
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from harness import MODELS, REPO, Server, find_binary, model_folder

REQUESTS = REPO / "examples" / "requests"
LINEAR = {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]}


def repository():
    """A temporary copy of examples/models with fresh components, and a
    second `linear` (`cycled`) that only the unload/load cycle touches."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="edgeserve-soak-"))
    for model in sorted(p.name for p in MODELS.iterdir() if p.is_dir()):
        model_folder(model, root / model)
    shutil.copytree(root / "linear", root / "cycled", symlinks=True)
    return root


def valid_requests():
    """(method, path, body, content type) of requests that must succeed."""
    oip = lambda model, body: ("POST", f"/v2/models/{model}/infer", body, "application/json")
    gpt2 = json.loads((REQUESTS / "gpt2.json").read_text())
    gpt2.setdefault("parameters", {})["max_tokens"] = 8
    return [
        oip("linear", json.dumps(LINEAR).encode()),
        oip("digits", (REQUESTS / "digits.json").read_bytes()),
        oip("recommender", (REQUESTS / "recommender.json").read_bytes()),
        oip("minilm", (REQUESTS / "minilm.json").read_bytes()),
        oip("gpt2", json.dumps(gpt2).encode()),
        ("POST", "/generate", b"text=Alice was&max_tokens=8", "application/x-www-form-urlencoded"),
        ("POST", "/v1/embeddings", json.dumps({"model": "minilm", "input": ["edge inference"]}).encode(),
         "application/json"),
        ("GET", "/v2/models/digits", None, None),
    ]


def malformed_requests():
    """Requests that must get a 4xx naming the problem."""
    bad_shape = {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2]}]}
    bad_type = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BOOL", "data": [True]}]}
    negative = {"inputs": [{"name": "x", "shape": [-1, 1], "datatype": "FP32", "data": [1]}]}
    huge = {"inputs": [{"name": "x", "shape": [1 << 62, 4], "datatype": "FP32", "data": [1]}]}
    post = lambda path, body: ("POST", path, body, "application/json")
    return [
        post("/v2/models/linear/infer", b'{"inputs": [}'),
        post("/v2/models/linear/infer", json.dumps(bad_shape).encode()),
        post("/v2/models/digits/infer", json.dumps(bad_type).encode()),
        post("/v2/models/recommender/infer", json.dumps(negative).encode()),
        post("/v2/models/minilm/infer", json.dumps(huge).encode()),
        post("/v2/models/nosuch/infer", json.dumps(LINEAR).encode()),
        post("/v2/models/gpt2/infer", b"\xff\xfe not json"),
        ("POST", "/generate", b"max_tokens=8", "application/x-www-form-urlencoded"),
        post("/v1/completions", json.dumps({"model": "minilm", "prompt": "x"}).encode()),
    ]


class Tally:
    """Outcomes by kind, shared by the workers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []

    def add(self, key, failure=None):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if failure and len(self.failures) < 20:
                self.failures.append(failure)


def send(port, method, path, body, content_type, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"content-type": content_type} if content_type else {}
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return response.status, response.getheader("retry-after"), response.read()
    finally:
        conn.close()


def expect(tally, kind, outcome, ok):
    status, retry_after, data = outcome
    if status == 503 and retry_after:
        tally.add("503 busy (Retry-After)")
    elif status >= 500:
        tally.add("unexpected 5xx", f"{kind}: {status} {data[:200]!r}")
    elif ok(status):
        tally.add(f"{kind} ok")
    else:
        tally.add(f"{kind} wrong status", f"{kind}: {status} {data[:200]!r}")


def oversize(port, limit):
    """A body declared past the limit (413 before it is read), or one sent
    past it (413 after reading up to the limit)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        declared = random.random() < 0.7
        length = limit + (32 << 20 if declared else 1)
        s.sendall(f"POST /v2/models/linear/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  f"content-length: {length}\r\nconnection: close\r\n\r\n".encode())
        if not declared:
            chunk = b" " * (1 << 20)
            try:
                for _ in range(length // len(chunk) + 1):
                    s.sendall(chunk)
            except OSError:
                pass  # the server answered and closed: the answer is what counts
        return int(s.makefile("rb").readline().split()[1])


def hang_up(port, valid):
    """A client that goes away: after half a request, after a request before
    the answer, or in the middle of a token stream."""
    how = random.choice(["half", "before answer", "mid-stream"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        if how == "half":
            s.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{\"inp")
        elif how == "before answer":
            _, path, body, ctype = valid[4]  # gpt2
            s.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ctype}\r\n"
                      f"content-length: {len(body)}\r\n\r\n".encode() + body)
        else:
            body = json.dumps({"text_input": "Alice was", "parameters": {"max_tokens": 64}}).encode()
            s.sendall(f"POST /v2/models/gpt2/generate_stream HTTP/1.1\r\nhost: x\r\n"
                      f"content-length: {len(body)}\r\n\r\n".encode() + body)
            s.recv(256)
        time.sleep(random.random() * 0.05)
    return how


def worker(port, stop, pause, tally, limit):
    valid, malformed = valid_requests(), malformed_requests()
    while not stop.is_set():
        if pause.is_set():
            time.sleep(0.05)
            continue
        roll = random.random()
        try:
            if roll < 0.6:
                request = random.choice(valid)
                expect(tally, "valid", send(port, *request), lambda s: s == 200)
            elif roll < 0.85:
                request = random.choice(malformed)
                expect(tally, "malformed", send(port, *request), lambda s: 400 <= s < 500)
            elif roll < 0.9:
                status = oversize(port, limit)
                expect(tally, "oversize", (status, None, b""), lambda s: s == 413)
            else:
                tally.add(f"hang-up ({hang_up(port, valid)})")
        except (OSError, http.client.HTTPException) as e:
            kind = "valid" if roll < 0.6 else "other"
            tally.add(f"{kind} unanswered", f"{kind}: {type(e).__name__}: {e}")


def cycler(port, stop, pause, tally):
    """Unloads and loads `cycled` over and over; in between, a request to
    it must be refused with a 4xx, and after the load answered."""
    while not stop.is_set():
        if pause.is_set():
            time.sleep(0.05)
            continue
        try:
            for step, path, ok in [
                ("unload", "/v2/repository/models/cycled/unload", lambda s: s == 200),
                ("request while unloaded", "/v2/models/cycled/infer", lambda s: 400 <= s < 500),
                ("load", "/v2/repository/models/cycled/load", lambda s: s == 200),
                ("request after load", "/v2/models/cycled/infer", lambda s: s == 200),
            ]:
                body = json.dumps(LINEAR).encode() if "infer" in path else b"{}"
                expect(tally, f"cycle {step}", send(port, "POST", path, body, "application/json"), ok)
        except (OSError, http.client.HTTPException) as e:
            tally.add("cycle unanswered", f"cycle: {type(e).__name__}: {e}")
        time.sleep(1)


def sample(pid):
    """(MiB held: resident less freed lazily; MiB resident; open descriptors)."""
    def kib(path, key):
        lines = pathlib.Path(path).read_text().splitlines()
        return next((int(line.split()[1]) for line in lines if line.startswith(key)), 0)

    rss_kib = kib(f"/proc/{pid}/status", "VmRSS:")
    lazy_kib = kib(f"/proc/{pid}/smaps_rollup", "LazyFree:")
    return (rss_kib - lazy_kib) / 1024, rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def quiesced(pid, pause):
    """[`sample`] with the load paused and its connections closed."""
    pause.set()
    time.sleep(3)
    sampled = sample(pid)
    pause.clear()
    return sampled


def soak(binary, repo, minutes, clients, threads, limit, purge_ms):
    models = ["linear", "digits", "recommender", "minilm", "gpt2", "cycled"]
    server = Server(binary, repo, models, threads, env={"EDGESERVE_MEMORY_PURGE_MS": str(purge_ms)})
    port, pid = server.port, server.proc.pid
    stop, pause, tally = threading.Event(), threading.Event(), Tally()
    threads_ = [threading.Thread(target=worker, args=(port, stop, pause, tally, limit)) for _ in range(clients)]
    threads_.append(threading.Thread(target=cycler, args=(port, stop, pause, tally)))
    for t in threads_:
        t.start()
    start = time.time()
    end = start + minutes * 60
    warmup_end = start + min(minutes * 60 / 4, 300)
    samples, warm = [], None
    print("| t (s) | held (MiB) | RSS (MiB) | open fds | requests so far |\n|---:|---:|---:|---:|---:|",
          flush=True)
    while time.time() < end:
        time.sleep(min(10, max(0, end - time.time())))
        if server.proc.poll() is not None:
            sys.exit(f"the server died with {server.proc.returncode}:\n{server.log_tail()}")
        now = time.time() - start
        if warm is None and time.time() >= warmup_end:
            warm = quiesced(pid, pause)
        held, rss, fds = sample(pid)
        samples.append((now, held))
        print(f"| {now:.0f} | {held:.1f} | {rss:.1f} | {fds} | {sum(tally.counts.values())} |", flush=True)
    stop.set()
    for t in threads_:
        t.join()
    time.sleep(3)
    stopped = sample(pid)
    server.stop()
    loaded = [held for t, held in samples if t >= warmup_end - start]
    third = max(1, len(loaded) // 3)
    floors = (min(loaded[:third]), min(loaded[-third:]))
    return tally, warm, stopped, floors


def sigterm_run(binary, repo, threads, clients=8, seconds=6):
    """Clients send valid requests on fresh connections; SIGTERM arrives
    mid-load. Returns counts by (when connected, outcome) and the exit code."""
    server = Server(binary, repo, ["linear", "gpt2", "minilm"], threads)
    port = server.port
    valid = [r for r in valid_requests() if r[1].split("/")[3:4] in (["linear"], ["gpt2"], ["minilm"])]
    signalled = threading.Event()
    tally = Tally()

    def client():
        while True:
            method, path, body, ctype = random.choice(valid)
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=60)
            except ConnectionRefusedError:
                tally.add("after signal: refused" if signalled.is_set() else "before signal: refused",
                          None if signalled.is_set() else "connection refused before the signal")
                return
            when = "after signal" if signalled.is_set() else "before signal"
            with s:
                try:
                    s.sendall(f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ctype}\r\n"
                              f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
                    reply = b""
                    while chunk := s.recv(65536):
                        reply += chunk
                    status = int(reply.split(b" ", 2)[1]) if reply else None
                    complete = status is not None and reply.count(b"\r\n\r\n") >= 1
                    outcome = f"answered {status}" if complete else "closed without an answer"
                except OSError as e:
                    outcome = f"reset ({type(e).__name__})"
            failure = None
            if when == "before signal" and outcome != "answered 200":
                failure = f"connected before the signal, then {outcome}"
            tally.add(f"{when}: {outcome}", failure)

    workers = [threading.Thread(target=client) for _ in range(clients)]
    for t in workers:
        t.start()
    time.sleep(seconds)
    server.proc.send_signal(signal.SIGTERM)
    signalled.set()
    code = server.proc.wait(timeout=120)
    for t in workers:
        t.join()
    os.unlink(server.log)
    return tally, code


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20, help="length of the soak (default 20)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent load threads (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="the server's compute threads (default 2)")
    parser.add_argument("--binary", type=pathlib.Path, default=None, help="edgeserve binary (default: release build)")
    parser.add_argument("--max-body-bytes", type=int, default=64 << 20, help="the server's body limit (its default)")
    parser.add_argument("--memory-purge-ms", type=int, default=0,
                        help="the soaked server's --memory-purge-ms (default 0: freed pages handed back at once)")
    args = parser.parse_args()
    binary = args.binary or find_binary()
    repo = repository()
    try:
        print(f"soak: {args.minutes} min, {args.clients} clients, {args.threads} compute threads, "
              f"--memory-purge-ms {args.memory_purge_ms}, {binary}")
        tally, (first, first_rss, warm_fds), (last, last_rss, end_fds), floors = soak(
            binary, repo, args.minutes, args.clients, args.threads, args.max_body_bytes, args.memory_purge_ms)
        print("\n| outcome | count |\n|---|---:|")
        for key, n in sorted(tally.counts.items()):
            print(f"| {key} | {n} |")
        for f in tally.failures:
            print(f"  failure: {f}")
        growth = (last - first) / first * 100
        checks = [
            (f"memory held with the load paused: {first:.1f} MiB after warm-up, {last:.1f} MiB at the "
             f"end ({growth:+.1f}%, limit +5%; RSS {first_rss:.1f} and {last_rss:.1f} MiB with the pages "
             f"freed lazily); lowest under load {floors[0]:.1f} MiB in the first third, "
             f"{floors[1]:.1f} MiB in the last", growth <= 5),
            (f"open fds with the load paused: {warm_fds} after warm-up, {end_fds} at the end", end_fds <= warm_fds),
            (f"unexpected 5xx: {tally.counts.get('unexpected 5xx', 0)}", "unexpected 5xx" not in tally.counts),
            ("every valid request answered with a 200",
             not any(k in tally.counts for k in ["valid unanswered", "valid wrong status", "cycle unanswered"])
             and not any(k.startswith("cycle") and "wrong" in k for k in tally.counts)),
        ]
        term, code = sigterm_run(binary, repo, args.threads)
        print("\nSIGTERM mid-load:\n\n| connection | outcome | count |\n|---|---|---:|")
        for key, n in sorted(term.counts.items()):
            when, outcome = key.split(": ", 1)
            print(f"| {when} | {outcome} | {n} |")
        for f in term.failures:
            print(f"  failure: {f}")
        checks += [
            ("every request connected before SIGTERM answered 200", not term.failures),
            ("connections after SIGTERM refused (or, still in the accept queue, answered), none reset",
             all(k in ("after signal: refused", "after signal: answered 200")
                 for k in term.counts if k.startswith("after signal"))),
            (f"exit code {code}", code == 0),
        ]
        print()
        for what, ok in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {what}")
        sys.exit(0 if all(ok for _, ok in checks) else 1)
    finally:
        shutil.rmtree(repo)


if __name__ == "__main__":
    main()
