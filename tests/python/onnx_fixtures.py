"""Regenerates the ONNX fixtures of tests/tests/onnx.rs in tests/data/onnx/.

    python3 tests/python/onnx_fixtures.py    # needs torch, transformers, scikit-learn, skl2onnx, onnx
    python3 tests/python/onnx_fixtures.py masks    # only the named fixtures

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
* bert_tiny.onnx    transformers BertModel (2 layers, hidden 32, random weights) with
                    dynamic batch and sequence axes, opset 14: LayerNorm decomposed
                    (ReduceMean/Sub/Pow/Sqrt/Div), the attention mask built from
                    Range/GreaterOrEqual/And/Gather/Expand/Where;
* bert_sdpa.onnx    the same BERT with transformers' default (SDPA) attention and mean
                    pooling over the mask, opset 17: the attention's softmax guarded by
                    IsNaN/Where, reshape targets computed from Shape, output
                    `embedding` [batch, 32];
* resnet.onnx       a ResNet-18-shaped network (7x7 stem, max pool, 4 stages of 2
                    basic blocks with 1x1 downsampling, global average pool, fc),
                    narrow (8..64 channels), random weights and BatchNorm statistics;
* masks.onnx        torch module whose masks and picks compute on request data:
                    Gather by request indices (negative ones too), Equal, Greater,
                    Less, Or, Expand of a reduction, Where with request data in
                    both branches, Clip and Cast of a mask to float;
* unsupported.onnx  a graph with two ops the handler lacks (named nodes);
* opset99.onnx      a valid graph that claims opset 99;
* external.onnx     a graph whose initializer lives in external.onnx.data.
"""

import pathlib
import sys

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
    export_classifier(net, images[:1], "cnn_digits.onnx")


def export_classifier(net, example, name):
    """`image` in, `logits` out, dynamic batch; without constant folding, so
    BatchNormalization stays in the graph for the importer to fold."""
    torch.onnx.export(
        net.eval(),
        example,
        OUT / name,
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


def bert_config(attention):
    from transformers import BertConfig

    return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, attn_implementation=attention)


def bert_example():
    """The export's inputs ([2, 10], the second sequence padded after 7
    tokens) and their names."""
    ids = torch.randint(0, 100, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.int64)
    mask[1, 7:] = 0
    return (ids, mask, torch.zeros_like(ids)), ["input_ids", "attention_mask", "token_type_ids"]


def bert():
    from transformers import BertModel

    torch.manual_seed(0)
    config = bert_config("eager")

    class Bert(torch.nn.Module):
        # transformers' forward takes keywords; the exporter passes positions.
        def __init__(self):
            super().__init__()
            self.bert = BertModel(config).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids)
            return out.last_hidden_state, out.pooler_output

    example, names = bert_example()
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    torch.onnx.export(
        Bert().eval(),
        example,
        OUT / "bert_tiny.onnx",
        input_names=names,
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes={**axes, "pooler_output": {0: "batch"}},
        opset_version=14,
        dynamo=False,
    )


def bert_sdpa():
    from transformers import BertModel

    torch.manual_seed(0)
    config = bert_config("sdpa")

    class MeanPooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            weights = attention_mask.unsqueeze(-1).float()
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    example, names = bert_example()
    torch.onnx.export(
        MeanPooled().eval(),
        example,
        OUT / "bert_sdpa.onnx",
        input_names=names,
        output_names=["embedding"],
        dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


class Block(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(torch.nn.Module):
    def __init__(self, widths=(8, 16, 32, 64), classes=10):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
        return self.fc(torch.flatten(x, 1))


def resnet():
    torch.manual_seed(0)
    net = ResNet()
    # Fresh BatchNorm layers are identities; random statistics make the
    # folding at import do real work.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    export_classifier(net, torch.randn(1, 3, 32, 32), "resnet.onnx")


class Masks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 6)

    def forward(self, x, ids):
        h = self.proj(x)                                        # [batch, 6]
        picked = h[:, ids]                                      # Gather, axis 1: [batch, k]
        mask = (ids == 0) | (picked > 0.25)                     # Equal, Greater, Or
        top = h.amax(dim=1, keepdim=True).expand(-1, ids.shape[0])  # Expand on request data
        y = torch.where(mask, picked, top)                      # Where, both branches request data
        y = torch.where(picked < -0.5, torch.zeros_like(y) - 1.0, y)
        return torch.clamp(y, -0.75, 0.9), mask.to(torch.float32)


def masks():
    torch.manual_seed(0)
    x = torch.randn(2, 6)
    ids = torch.tensor([0, 3, 5, 1], dtype=torch.int64)
    torch.onnx.export(
        Masks().eval(),
        (x, ids),
        OUT / "masks.onnx",
        input_names=["x", "ids"],
        output_names=["y", "mask"],
        dynamic_axes={"x": {0: "batch"}, "ids": {0: "k"}, "y": {0: "batch", 1: "k"},
                      "mask": {0: "batch", 1: "k"}},
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


def main(only):
    OUT.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    fixtures = {
        "mlp": lambda: mlp(x, y),
        "cnn": lambda: cnn(x, y),
        "encoder": encoder,
        "bert": bert,
        "bert_sdpa": bert_sdpa,
        "resnet": resnet,
        "masks": masks,
        "bad": bad_models,
    }
    for name, make in fixtures.items():
        if not only or name in only:
            make()


if __name__ == "__main__":
    main(sys.argv[1:])
