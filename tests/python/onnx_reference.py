"""onnxruntime's answer for tests/tests/onnx.rs: reads {"model": PATH,
"inputs": {NAME: {"shape": [...], "datatype": "FP32"|"INT64", "data": [...]}}}
on stdin, prints {NAME: {"shape": [...], "data": [...]}} for every output."""

import json
import sys

import numpy as np
import onnxruntime

DTYPES = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32}

request = json.load(sys.stdin)
session = onnxruntime.InferenceSession(request["model"], providers=["CPUExecutionProvider"])
feeds = {
    name: np.array(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"])
    for name, t in request["inputs"].items()
}
names = [o.name for o in session.get_outputs()]
outputs = session.run(names, feeds)
json.dump({n: {"shape": list(v.shape), "data": v.ravel().tolist()} for n, v in zip(names, outputs)}, sys.stdout)
