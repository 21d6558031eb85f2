"""Exports all-MiniLM-L6-v2 from the shipped weights (examples/models/minilm/1)
with `torch.onnx.export`, as a user serving their own transformers model would:

    python3 bench/minilm_torch_export.py OUT.onnx

transformers' BertModel with its default (SDPA) attention, mean pooling over
the attention mask and L2 normalization, opset 17, dynamic batch and sequence
axes: reshape targets and the mask's shape computed from `Shape` at run time,
q and k each scaled before their product, the softmax guarded by IsNaN.
Inputs input_ids/attention_mask/token_type_ids, output `embedding`
[batch, 384]. Needs torch and transformers (bench/requirements.txt).
"""

import pathlib
import sys

import torch
from transformers import BertModel

WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "examples" / "models" / "minilm" / "1"


class Embedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = BertModel.from_pretrained(str(WEIGHTS), add_pooling_layer=False).eval()

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        weights = attention_mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def main(out):
    ids = torch.randint(1000, 2000, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.int64)
    mask[1, 7:] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(Embedding().eval(), (ids, mask, torch.zeros_like(ids)), out, input_names=names,
                      output_names=["embedding"],
                      dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)


if __name__ == "__main__":
    main(sys.argv[1])
