"""Regenerates the ONNX fixtures of tests/tests/onnx.rs in tests/data/onnx/.

    python3 tests/python/onnx_fixtures.py    # needs torch, scikit-learn, skl2onnx, onnx

Real exporters, small models trained (or initialised) with fixed seeds on
data sets that ship with the packages:
* mlp_digits.onnx   skl2onnx MLPClassifier on sklearn's 8x8 digits (zipmap off);
* cnn_digits.onnx   torch CNN (conv/bn/relu/maxpool/conv/relu/avgpool/fc) trained
                    briefly on the digits, exported with a dynamic batch axis and
                    without constant folding, so BatchNormalization stays in the
                    graph for the importer to fold;
* encoder.onnx      torch token embedding + TransformerEncoderLayer (attention,
                    GELU, LayerNorm) + mean pooling, for ids [2, 10] (torch's trace
                    of nn.MultiheadAttention bakes both dims into its reshapes);
* unsupported.onnx  a graph with two ops the handler lacks (named nodes);
* opset99.onnx      a valid graph that claims opset 99;
* external.onnx     a graph whose initializer lives in external.onnx.data.
"""

import pathlib

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

OUT = pathlib.Path(__file__).resolve().parents[1] / "data" / "onnx"


def mlp(x, y):
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(x, y)
    model = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    onnx.save(model, OUT / "mlp_digits.onnx")


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.conv2(x))
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def cnn(x, y):
    torch.manual_seed(0)
    net = Cnn()
    images = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    labels = torch.tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        opt.step()
    net.eval()
    torch.onnx.export(
        net,
        images[:1],
        OUT / "cnn_digits.onnx",
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        do_constant_folding=False,
        dynamo=False,
    )


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(100, 32)
        self.pos = torch.nn.Parameter(torch.randn(1, 64, 32) * 0.1)
        self.layer = torch.nn.TransformerEncoderLayer(
            32, 4, 64, dropout=0.0, batch_first=True, activation="gelu")
        self.norm = torch.nn.LayerNorm(32)

    def forward(self, ids):
        x = self.emb(ids) + self.pos[:, : ids.shape[1]]
        return self.norm(self.layer(x)).mean(1)


def encoder():
    torch.manual_seed(0)
    net = Encoder().eval()
    ids = torch.randint(0, 100, (2, 10))
    torch.onnx.export(
        net,
        (ids,),
        OUT / "encoder.onnx",
        input_names=["ids"],
        output_names=["embedding"],
        opset_version=17,
        dynamo=False,
    )


def small(nodes, opset=17, initializers=()):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        initializer=list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def bad_models():
    unsupported = small([
        helper.make_node("Relu", ["x"], ["h"], name="relu"),
        helper.make_node("Hardmax", ["h"], ["m"], name="pick_max"),
        helper.make_node("Mod", ["m", "m"], ["y"], name="remainder", fmod=1),
    ])
    onnx.save(unsupported, OUT / "unsupported.onnx")
    onnx.save(small([helper.make_node("Relu", ["x"], ["y"], name="relu")], opset=99), OUT / "opset99.onnx")
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    external = small([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], initializers=[w])
    (OUT / "external.onnx.data").unlink(missing_ok=True)  # onnx.save appends to it
    onnx.save(external, OUT / "external.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="external.onnx.data", size_threshold=0)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    mlp(x, y)
    cnn(x, y)
    encoder()
    bad_models()


if __name__ == "__main__":
    main()
