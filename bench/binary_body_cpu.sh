#!/usr/bin/env bash
# Server CPU per request for large binary-extension bodies, two builds
# taking turns: `linear` on 1Mi floats (4 MiB in, 4 MiB out, JSON header of
# 181 bytes, so the data lies unaligned in the body as sent), driven by
# wrk -t1 -c2 for 5 s per turn. CPU is the server process's user + system
# time over the turn, from /proc, so the load generator's share is not in it.
#
#   bench/binary_body_cpu.sh BINARY_A BINARY_B [PAIRS]
#
# Needs wrk (apt-get install wrk) and examples/models with the linear plugin
# (scripts/build-plugins.sh).
set -euo pipefail
A=$1 B=$2 PAIRS=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import json, struct, sys
n = 1 << 20
head = json.dumps({"inputs": [{"name": "x", "shape": [n, 1], "datatype": "FP32",
                               "parameters": {"binary_data_size": 4 * n}}],
                   "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
open(f"{sys.argv[1]}/body", "wb").write(head + struct.pack(f"<{n}f", *(float(i % 251) for i in range(n))))
open(f"{sys.argv[1]}/request.lua", "w").write(f'''local f = io.open("{sys.argv[1]}/body", "rb")
wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "{len(head)}"
''')
PY
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
turn() {
  local bin=$1 port pid url before after out n
  port=$((20000 + RANDOM % 2000))
  "$bin" serve --model-repository "$here/examples/models" --http-port "$port" --grpc-port 0 \
    --device cpu >/dev/null 2>&1 &
  pid=$!
  url=http://127.0.0.1:$port/v2/models/linear
  for _ in $(seq 300); do curl -sf "$url/ready" >/dev/null && break; sleep 0.1; done
  wrk -t1 -c2 -d1s -s "$work/request.lua" "$url/infer" >/dev/null
  before=$(cpu "$pid")
  out=$(wrk -t1 -c2 -d5s -s "$work/request.lua" "$url/infer")
  after=$(cpu "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -q Non-2xx <<<"$out"; then echo "$bin: errors: $out" >&2; exit 1; fi
  awk -v t="$((after - before))" -v n="$n" -v hz="$(getconf CLK_TCK)" -v bin="$bin" \
    -v rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    'BEGIN {printf "| %s | %.2f ms | %s |\n", bin, t / hz / n * 1e3, rps}'
}
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| build | server CPU per request | requests/s |"
echo "|---|---:|---:|"
for _ in $(seq "$PAIRS"); do turn "$A"; turn "$B"; done
