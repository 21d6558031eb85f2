"""Calls `digits` with Triton's binary tensor data extension, by hand.

Usage: python3 examples/clients/binary_infer.py [http://127.0.0.1:8000]

The body is a JSON header followed by the raw little-endian FP32 pixels;
`Inference-Header-Content-Length` says where the JSON ends. Outputs come back
the same way because they ask for `binary_data`.
"""
import json
import struct
import sys
import urllib.request

base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
# An 8x8 "zero": pixel intensities 0..16, row by row.
pixels = [0, 0, 5, 13, 9, 1, 0, 0,
          0, 0, 13, 15, 10, 15, 5, 0,
          0, 3, 15, 2, 0, 11, 8, 0,
          0, 4, 12, 0, 0, 8, 8, 0,
          0, 5, 8, 0, 0, 9, 8, 0,
          0, 4, 11, 0, 1, 12, 7, 0,
          0, 2, 14, 5, 10, 12, 0, 0,
          0, 0, 6, 13, 10, 0, 0, 0]
data = struct.pack("<64f", *pixels)
header = json.dumps({
    "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                "parameters": {"binary_data_size": len(data)}}],
    "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                {"name": "label", "parameters": {"binary_data": True}}],
}).encode()
request = urllib.request.Request(
    f"{base}/v2/models/digits/infer",
    data=header + data,
    headers={"Inference-Header-Content-Length": str(len(header)),
             "Content-Type": "application/octet-stream"},
)
with urllib.request.urlopen(request) as response:
    json_len = int(response.headers["Inference-Header-Content-Length"])
    body = response.read()
meta = json.loads(body[:json_len])
blob = body[json_len:]
sizes = [o["parameters"]["binary_data_size"] for o in meta["outputs"]]
probabilities = struct.unpack(f"<{sizes[0] // 4}f", blob[:sizes[0]])
label = struct.unpack("<q", blob[sizes[0]:sizes[0] + sizes[1]])[0]
print(f"label {label}, p = {max(probabilities):.4f}")
