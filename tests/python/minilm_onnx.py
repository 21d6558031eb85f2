"""Builds all-MiniLM-L6-v2 as an ONNX file from the shipped weights
(examples/models/minilm/1, put there by scripts/fetch-minilm.sh), for
tests/tests/onnx_minilm.rs and bench/onnx_vs_ort.py:

    python3 tests/python/minilm_onnx.py OUT.onnx [--token-embeddings | --last-hidden-state]

The graph is the sentence-transformers model end to end on token ids, written
node by node as `torch.onnx.export` writes a BERT (opset 17): embeddings
(Gather, positions from Shape/Range), LayerNormalization, per layer Q/K/V as
MatMul + Add of [in, out] weights, Reshape/Transpose into heads, MatMul,
scaling, the attention mask as Cast/Where/Unsqueeze added to the scores,
Softmax, GELU in its erf form; then mean pooling over the mask and L2
normalization (ReduceL2/Clip/Div). Inputs input_ids/attention_mask/
token_type_ids ([batch, sequence], both dynamic), output `embedding`
[batch, 384]; with --token-embeddings also `token_embeddings` [batch,
sequence, 384], the last hidden state, as sentence-transformers' exports
have it. With --last-hidden-state the graph stops there: its one output is
`last_hidden_state`, with no pooling, as optimum exports a BERT for feature
extraction.

Built with the `onnx` package rather than exported with torch: torch is not a
test dependency (PyPI's Linux wheel pulls the CUDA stack, gigabytes), and the
file (about 90 MB) is made at test time in a second rather than committed.
"""

import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

WEIGHTS = pathlib.Path(__file__).resolve().parents[2] / "examples" / "models" / "minilm" / "1"
HEADS, DIM, LAYERS, EPS = 12, 384, 6, 1e-12


class Builder:
    def __init__(self, weights):
        self.weights = weights
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, value, dtype=np.float32):
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def weight(self, name, transpose=False):
        value = self.weights[name]
        self.inits.append(numpy_helper.from_array(value.T.copy() if transpose else value, name))
        return name

    def op(self, op, *inputs, **attrs):
        self.count += 1
        out = f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=f"/{op}_{self.count}", **attrs))
        return out

    def linear(self, x, prefix):
        # torch stores Linear weights [out, in] and exports x · Wᵀ as MatMul by [in, out].
        return self.op("Add", self.op("MatMul", x, self.weight(f"{prefix}.weight", transpose=True)),
                       self.weight(f"{prefix}.bias"))

    def layer_norm(self, x, prefix):
        return self.op("LayerNormalization", x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias"),
                       axis=-1, epsilon=EPS)

    def gelu(self, x):
        erf = self.op("Erf", self.op("Div", x, self.const(np.sqrt(2.0))))
        return self.op("Mul", self.op("Mul", x, self.op("Add", erf, self.const(1.0))), self.const(0.5))

    def heads(self, x, perm):
        return self.op("Transpose", self.op("Reshape", x, self.const([0, 0, HEADS, DIM // HEADS], np.int64)),
                       perm=perm)


def build(out, token_embeddings=False, last_hidden_state=False):
    b = Builder(load_file(WEIGHTS / "model.safetensors"))
    seq = b.op("Gather", b.op("Shape", "input_ids"), b.const(1, np.int64), axis=0)
    positions = b.op("Range", b.const(0, np.int64), seq, b.const(1, np.int64))
    h = b.op("Add", b.op("Gather", b.weight("embeddings.word_embeddings.weight"), "input_ids"),
             b.op("Gather", b.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"))
    h = b.op("Add", h, b.op("Gather", b.weight("embeddings.position_embeddings.weight"), positions))
    h = b.layer_norm(h, "embeddings.LayerNorm")
    keep = b.op("Cast", "attention_mask", to=TensorProto.BOOL)
    bias = b.op("Where", keep, b.const(0.0), b.const(np.finfo(np.float32).min))
    bias = b.op("Unsqueeze", bias, b.const([1, 2], np.int64))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        q = b.heads(b.linear(h, f"{p}.attention.self.query"), [0, 2, 1, 3])
        k = b.heads(b.linear(h, f"{p}.attention.self.key"), [0, 2, 3, 1])
        v = b.heads(b.linear(h, f"{p}.attention.self.value"), [0, 2, 1, 3])
        scores = b.op("Mul", b.op("MatMul", q, k), b.const(1 / np.sqrt(DIM // HEADS)))
        probs = b.op("Softmax", b.op("Add", scores, bias), axis=-1)
        ctx = b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", ctx, b.const([0, 0, DIM], np.int64))
        h = b.layer_norm(b.op("Add", b.linear(ctx, f"{p}.attention.output.dense"), h),
                         f"{p}.attention.output.LayerNorm")
        ff = b.linear(b.gelu(b.linear(h, f"{p}.intermediate.dense")), f"{p}.output.dense")
        h = b.layer_norm(b.op("Add", ff, h), f"{p}.output.LayerNorm")
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
           for n in ["input_ids", "attention_mask", "token_type_ids"]]
    if last_hidden_state:
        # As optimum exports a BERT for feature extraction: no pooling.
        b.nodes.append(helper.make_node("Identity", [h], ["last_hidden_state"], name="/last_hidden_state"))
        outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                                 ["batch", "sequence", DIM])]
        return save(b, ids, outputs, out)
    mask = b.op("Unsqueeze", b.op("Cast", "attention_mask", to=TensorProto.FLOAT), b.const([-1], np.int64))
    total = b.op("ReduceSum", b.op("Mul", h, mask), b.const([1], np.int64), keepdims=0)
    count = b.op("Clip", b.op("ReduceSum", mask, b.const([1], np.int64), keepdims=0), b.const(1e-9))
    pooled = b.op("Div", total, count)
    norm = b.op("Clip", b.op("ReduceL2", pooled, axes=[1], keepdims=1), b.const(1e-12))
    b.nodes.append(helper.make_node("Div", [pooled, norm], ["embedding"], name="/normalize"))
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])]
    if token_embeddings:
        b.nodes.append(helper.make_node("Identity", [h], ["token_embeddings"], name="/token_embeddings"))
        outputs.append(helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT,
                                                     ["batch", "sequence", DIM]))
    save(b, ids, outputs, out)


def save(b, ids, outputs, out):
    graph = helper.make_graph(b.nodes, "all-MiniLM-L6-v2", ids, outputs, initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out)


if __name__ == "__main__":
    build(sys.argv[1], token_embeddings="--token-embeddings" in sys.argv[2:],
          last_hidden_state="--last-hidden-state" in sys.argv[2:])
