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
* gpt2_tiny.onnx    transformers GPT2Model (2 layers, hidden 32, random weights),
                    `input_ids` in, `last_hidden_state` out, dynamic batch and
                    sequence: the fused QKV projection cut by Split, the causal mask
                    of SDPA's is_causal made by Trilu (the trace's empty cache skips
                    transformers' packed-sequence check, whose torch.diff has no
                    export), GELU as tanh (Pow/Tanh);
* roberta_tiny.onnx transformers RobertaModel (2 layers, hidden 32, no pooler) over
                    `input_ids` and `attention_mask`, dynamic batch and sequence:
                    position ids from CumSum over the ids that are not padding_idx 1
                    (Equal, Not), token types picked by GatherElements at those
                    positions, SDPA's softmax guarded by IsNaN/Where;
* mobilenet_tiny.onnx transformers MobileNetV2Model (depth multiplier 0.2, expand
                    ratio 1.5, no 1280-wide head, so the file stays small; 32x32
                    images, dynamic batch), `pooler_output`, with torchvision's conv
                    init and random BatchNorm statistics (folded by the exporter):
                    every conv behind a TF-style "SAME" Pad (asymmetric, [0, 1], where
                    it strides; its pads a ConstantOfShape/Concat/Slice/Transpose/Cast
                    chain of constants), ReLU6 as Clip, depthwise Convs;
* swin_tiny.onnx    transformers SwinModel (2 stages of 1 block, embed dim 16,
                    window 4; 32x32 images, dynamic batch), `pooler_output`: each
                    block pads its hidden states to whole windows by pads computed
                    from Shape through Sub/Mod (zero here, but computed in the graph),
                    windows partitioned by Reshape/Transpose, patch merging by
                    strided Slices;
* whisper_encoder_tiny.onnx  the encoder of a transformers WhisperModel (1 layer,
                    d_model 32, 16 mel bins, 50 frames; dynamic batch),
                    `input_features` in, `last_hidden_state` [batch, 25, 32] out: two
                    1-D Convs (the second with stride 2) with GELU, then attention;
* vision_ops.onnx   torch module over `image` [batch, 3, 16, 16], `logits` out: Conv +
                    HardSwish, depthwise Conv, squeeze-excite (ReduceMean, 1x1 Convs,
                    Relu, HardSigmoid, Mul), asymmetric constant Pad (1, 2, 0, 1) before
                    an unpadded Conv (its pads from a ConstantOfShape/Concat/Slice/Cast
                    chain), Split of the channels into halves concatenated swapped,
                    Resize nearest (asymmetric, floor) and Resize linear (half_pixel)
                    summed, ConvTranspose (2x2, stride 2), Elu - Softplus, PRelu (8
                    slopes), ReduceMean and Gemm;
* op_variants.onnx  hand-built (onnx.helper), `x` [batch, 4, 6, 6] and `picks`
                    INT64 [batch, 4, 3, 6] in: one output per attribute variant the
                    exports above leave out: Pad edge/reflect/wrap and a constant
                    pad that also crops, CumSum exclusive+reverse and over the last
                    axis, Trilu lower/upper off the diagonal, GatherElements with
                    negative indices, Resize linear align_corners and nearest
                    asymmetric/floor and half_pixel/round_prefer_ceil, Conv with
                    auto_pad SAME_UPPER and stride 2, a grouped, dilated
                    ConvTranspose with asymmetric pads and output_padding, 1-D Conv
                    and ConvTranspose, Split by sizes, Selu, Softsign, Mish, Elu,
                    HardSigmoid with its own alpha and beta, a reversed LSTM with
                    peepholes and a cell clip, a bidirectional GRU with
                    linear_before_reset=0;
* recurrent.onnx    torch nn.LSTM (2 layers, bidirectional), nn.GRU and nn.RNN,
                    batch first, over `x` [batch, steps, 8] with dynamic batch and
                    steps: `y` (the RNN's outputs), `h` and `c` (the LSTM's final
                    states); LSTM/GRU/RNN nodes with initial states from
                    ConstantOfShape, GRU with linear_before_reset=1, the RNN's
                    activations written out;
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


def export(net, example, name, inputs, outputs, axes, constant_folding=True):
    """`net` at opset 17 with the dynamic `axes` ({index: name}) on every
    input and output."""
    torch.onnx.export(
        net.eval(),
        example,
        OUT / name,
        input_names=inputs,
        output_names=outputs,
        dynamic_axes={n: axes for n in inputs + outputs},
        opset_version=17,
        do_constant_folding=constant_folding,
        dynamo=False,
    )


def export_classifier(net, example, name):
    """`image` in, `logits` out, dynamic batch; without constant folding, so
    BatchNormalization stays in the graph for the importer to fold."""
    export(net, example, name, ["image"], ["logits"], {0: "batch"}, constant_folding=False)


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


def export_hidden(net, example, names, name):
    """`names` in (INT64 [batch, sequence]), `last_hidden_state` out, with
    dynamic batch and sequence axes."""
    export(net, example, name, names, ["last_hidden_state"], {0: "batch", 1: "sequence"})


def gpt2_tiny():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64,
                        bos_token_id=0, eos_token_id=0)

    class Gpt2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gpt2 = GPT2Model(config).eval()

        def forward(self, input_ids):
            # With a (fresh, empty) cache transformers skips its packed-sequence
            # check, whose torch.diff the exporter lacks, and SDPA takes
            # is_causal (Trilu) instead of a materialised mask.
            return self.gpt2(input_ids=input_ids, use_cache=True).last_hidden_state

    export_hidden(Gpt2(), (torch.randint(0, 100, (2, 10)),), ["input_ids"], "gpt2_tiny.onnx")


def roberta_tiny():
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config = RobertaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                           vocab_size=100, max_position_embeddings=66)

    class Roberta(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.roberta = RobertaModel(config, add_pooling_layer=False).eval()

        def forward(self, input_ids, attention_mask):
            return self.roberta(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # Ids from 3 up: 1 is RoBERTa's padding_idx (positions count the others).
    ids = torch.randint(3, 100, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.int64)
    mask[1, 7:] = 0
    export_hidden(Roberta(), (ids, mask), ["input_ids", "attention_mask"], "roberta_tiny.onnx")


class Pooled(torch.nn.Module):
    """A transformers vision model's `pooler_output` for `pixel_values`."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).pooler_output


def export_pooled(model, name):
    """`pixel_values` [batch, 3, 32, 32] in, `pooler_output` out, dynamic batch."""
    example = (torch.randn(2, 3, 32, 32),)
    export(Pooled(model), example, name, ["pixel_values"], ["pooler_output"], {0: "batch"})


def mobilenet_tiny():
    from transformers import MobileNetV2Config, MobileNetV2Model

    torch.manual_seed(0)
    # At depth multiplier 0.35 the weights alone are 1.6 MB; these keep all
    # 17 blocks and their padding but under 400 KB.
    config = MobileNetV2Config(depth_multiplier=0.2, expand_ratio=1.5, finegrained_output=False, image_size=32)
    model = MobileNetV2Model(config)
    # transformers initialises the convs with std 0.02, under which 17 blocks
    # shrink any image to ~1e-35; torchvision's MobileNetV2 init keeps the
    # activations in scale, and random BatchNorm statistics and scales of
    # 1..2 send some of them past ReLU6's upper clip.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(1.0, 2.0)
                m.bias.uniform_(-0.1, 0.1)
    export_pooled(model, "mobilenet_tiny.onnx")


def swin_tiny():
    from transformers import SwinConfig, SwinModel

    torch.manual_seed(0)
    config = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4)
    export_pooled(SwinModel(config), "swin_tiny.onnx")


def whisper_encoder_tiny():
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(encoder_layers=1, decoder_layers=1, d_model=32, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                           max_source_positions=25)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = WhisperModel(config).eval().get_encoder()

        def forward(self, input_features):
            return self.encoder(input_features=input_features).last_hidden_state

    # The encoder takes exactly 2 * max_source_positions frames.
    export(Encoder(), (torch.randn(2, 16, 50),), "whisper_encoder_tiny.onnx",
           ["input_features"], ["last_hidden_state"], {0: "batch"})


class VisionOps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.act = nn.Hardswish()
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.squeeze = nn.Conv2d(16, 4, 1)
        self.excite = nn.Conv2d(4, 16, 1)
        self.gate = nn.Hardsigmoid()
        self.padded = nn.Conv2d(16, 16, 3)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.deconv = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.prelu = nn.PReLU(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, image):
        f = torch.nn.functional
        x = self.depthwise(self.act(self.stem(image)))              # [batch, 16, 8, 8]
        s = x.mean((2, 3), keepdim=True)                            # squeeze-excite
        x = x * self.gate(self.excite(torch.relu(self.squeeze(s))))
        x = self.padded(f.pad(x, (1, 2, 0, 1)))                     # [batch, 16, 7, 9]
        a, b = torch.split(x, 8, dim=1)
        x = torch.cat([b, a], dim=1)
        x = self.up(x) + f.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.deconv(x)                                          # [batch, 8, 28, 36]
        x = self.prelu(f.elu(x) - f.softplus(x))
        return self.fc(x.mean((2, 3)))


def vision_ops():
    torch.manual_seed(0)
    net = VisionOps()
    with torch.no_grad():  # slopes of their own per channel, not PReLU's 0.25
        net.prelu.weight.uniform_(0.05, 0.5)
    export(net, (torch.randn(2, 3, 16, 16),), "vision_ops.onnx", ["image"], ["logits"], {0: "batch"})


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


class Recurrent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = torch.nn.GRU(32, 12, batch_first=True)
        self.rnn = torch.nn.RNN(12, 6, batch_first=True)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        y, _ = self.gru(y)
        y, _ = self.rnn(y)
        return y, h, c


def recurrent():
    torch.manual_seed(0)
    torch.onnx.export(
        Recurrent().eval(),
        (torch.randn(2, 5, 8),),
        OUT / "recurrent.onnx",
        input_names=["x"],
        output_names=["y", "h", "c"],
        dynamic_axes={"x": {0: "batch", 1: "steps"}, "y": {0: "batch", 1: "steps"},
                      "h": {1: "batch"}, "c": {1: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def op_variants():
    rng = np.random.default_rng(0)

    def weight(name, shape):
        return numpy_helper.from_array(rng.uniform(-0.5, 0.5, shape).astype(np.float32), name)

    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    def floats(name, values):
        return numpy_helper.from_array(np.array(values, np.float32), name)

    node = helper.make_node
    nodes = [
        node("Pad", ["x", "pads_a"], ["pad_edge"], mode="edge"),
        node("Pad", ["x", "pads_b"], ["pad_reflect"], mode="reflect"),
        node("Pad", ["x", "pads_a"], ["pad_wrap"], mode="wrap"),
        node("Pad", ["x", "pads_crop", "half"], ["pad_crop"]),
        node("CumSum", ["x", "two"], ["cumsum_back"], exclusive=1, reverse=1),
        node("CumSum", ["x", "minus_one"], ["cumsum_last"]),
        node("Trilu", ["x", "minus_one"], ["trilu_lower"], upper=0),
        node("Trilu", ["x", "two"], ["trilu_upper"]),
        node("GatherElements", ["x", "picks"], ["gather_elements"], axis=2),
        node("Resize", ["x", "", "scales_a"], ["resize_corners"], mode="linear",
             coordinate_transformation_mode="align_corners"),
        node("Resize", ["x", "", "scales_b"], ["resize_floor"], mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        node("Resize", ["x", "", "scales_a"], ["resize_ceil"], mode="nearest",
             nearest_mode="round_prefer_ceil"),
        node("Conv", ["x", "w_same"], ["conv_same"], auto_pad="SAME_UPPER", strides=[2, 2]),
        node("ConvTranspose", ["x", "w_t", "b_t"], ["conv_transpose"], group=2,
             strides=[2, 2], dilations=[1, 2], pads=[1, 0, 0, 1], output_padding=[1, 0]),
        node("Reshape", ["x", "line"], ["x_line"]),
        node("Conv", ["x_line", "w_1d"], ["conv_1d"], pads=[2, 0], strides=[2]),
        node("ConvTranspose", ["x_line", "w_t1d"], ["conv_transpose_1d"], strides=[3]),
        node("Split", ["x", "sizes"], ["split_a", "split_b"], axis=1),
        node("Selu", ["x"], ["selu"]),
        node("Softsign", ["x"], ["softsign"]),
        node("Mish", ["x"], ["mish"]),
        node("Elu", ["x"], ["elu"], alpha=0.5),
        node("HardSigmoid", ["x"], ["hard_sigmoid"], alpha=0.3, beta=0.4),
        node("Reshape", ["x", "sequence"], ["x_sequence"]),
        node("LSTM", ["x_sequence", "w_lstm", "r_lstm", "b_lstm", "", "", "", "p_lstm"],
             ["lstm_y", "lstm_h", "lstm_c"], hidden_size=5, direction="reverse", clip=0.5),
        node("GRU", ["x_sequence", "w_gru", "r_gru", "b_gru"], ["gru_y", "gru_h"],
             hidden_size=4, direction="bidirectional"),
    ]
    inits = [
        ints("pads_a", [0, 0, 1, 2, 0, 0, 2, 1]),
        ints("pads_b", [0, 0, 2, 1, 0, 0, 1, 2]),
        ints("pads_crop", [0, 0, -1, 1, 0, 0, 1, -2]),
        floats("half", 0.5),
        ints("two", 2),
        ints("minus_one", -1),
        floats("scales_a", [1, 1, 1.5, 2]),
        floats("scales_b", [1, 1, 2, 0.5]),
        weight("w_same", (5, 4, 3, 3)),
        weight("w_t", (4, 3, 3, 3)),
        weight("b_t", (6,)),
        ints("line", [0, 4, 36]),
        weight("w_1d", (2, 4, 3)),
        weight("w_t1d", (4, 2, 3)),
        ints("sizes", [1, 3]),
        ints("sequence", [-1, 6, 6]),
        weight("w_lstm", (1, 20, 6)),
        weight("r_lstm", (1, 20, 5)),
        weight("b_lstm", (1, 40)),
        weight("p_lstm", (1, 15)),
        weight("w_gru", (2, 12, 6)),
        weight("r_gru", (2, 12, 4)),
        weight("b_gru", (2, 24)),
    ]
    outputs = [o for n in nodes for o in n.output if n.op_type != "Reshape"]
    graph = helper.make_graph(
        nodes,
        "op_variants",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6, 6]),
         helper.make_tensor_value_info("picks", TensorProto.INT64, ["batch", 4, 3, 6])],
        [],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    # Every output with the shape onnx infers for it.
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(inferred[o] for o in outputs)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, OUT / "op_variants.onnx")


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
        "gpt2_tiny": gpt2_tiny,
        "roberta_tiny": roberta_tiny,
        "mobilenet_tiny": mobilenet_tiny,
        "swin_tiny": swin_tiny,
        "whisper_encoder_tiny": whisper_encoder_tiny,
        "vision_ops": vision_ops,
        "op_variants": op_variants,
        "recurrent": recurrent,
        "bad": bad_models,
    }
    for name, make in fixtures.items():
        if not only or name in only:
            make()


if __name__ == "__main__":
    main(sys.argv[1:])
