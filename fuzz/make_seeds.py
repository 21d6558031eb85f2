#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/.

The seeds are committed; this script documents how they were made and
rewrites them (`python3 fuzz/make_seeds.py`). Inputs the coverage-guided
runs kept (`cargo fuzz cmin`) sit next to them; inputs of fixed bugs live in
fuzz/regressions/<target>/.
"""

import gzip
import io
import json
import struct
import tarfile
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent


def write(target, name, data):
    folder = FUZZ / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / f"seed-{name}").write_bytes(data)


def infer(*inputs, **extra):
    return json.dumps({"inputs": list(inputs), **extra}, separators=(",", ":"))


def oip_json():
    fp32 = {"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}
    write("oip_json", "fp32", infer(fp32))
    write("oip_json", "nested", infer({**fp32, "shape": [2, 2], "data": [[1, 2], [3, 4]]}))
    write("oip_json", "every-dtype", infer(
        {"name": "a", "shape": [2], "datatype": "INT64", "data": [-1, 9007199254740993]},
        {"name": "b", "shape": [1], "datatype": "UINT8", "data": [255]},
        {"name": "c", "shape": [1], "datatype": "FP16", "data": [0.5]},
        {"name": "d", "shape": [1], "datatype": "INT32", "data": [2147483647]},
        {"name": "e", "shape": [2], "datatype": "BYTES", "data": ["héllo", ""]},
    ))
    write("oip_json", "envelope", infer(
        fp32, id="r1",
        parameters={"binary_data_output": True, "max_tokens": 4, "t": 0.5, "s": "x", "o": {}},
        outputs=[{"name": "y", "parameters": {"binary_data": False}}],
    ))
    write("oip_json", "huge-shape", infer(
        {"name": "x", "shape": [9223372036854775807, 2], "datatype": "FP32", "data": []}))
    write("oip_json", "zero-dim", infer(
        {"name": "x", "shape": [0, 18446744073709551615], "datatype": "FP32", "data": []}))
    write("oip_json", "deep", '{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":'
          + "[" * 200 + "1" + "]" * 200 + "}]}")
    write("oip_json", "duplicate", infer(fp32, fp32))
    # Numeric arrays are lifted out of the text and read apart from it: every
    # form of number, spacing, nesting, and refusals must decode as through
    # serde_json `Value`s.
    write("oip_json", "lifted-forms",
          '{"inputs":[{"name":"x","shape":[10],"datatype":"FP32","data" :\n [ 0.8506242036819458 ,\t-0.0,'
          '1e-05,13.0,3,-7,1.5E+3,0.30000000000000004,123456789012345678901,-9223372036854775809 ]},'
          '{"name":"i","shape":[2,2],"datatype":"INT64","data":[[-9223372036854775808,0],[18,-5]]}]}')
    write("oip_json", "lifted-overflow", infer(
        {"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2147483648]}))
    write("oip_json", "lifted-elsewhere", infer(
        {"data": [1, 2], "name": "data", "shape": [2], "datatype": "UINT8"},
        parameters={"data": [3, 4]},
        outputs=[{"name": "y", "parameters": {"data": [5]}}],
    ))
    write("oip_json", "lifted-marker",
          '{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":"#lifted-0000000000000000-0"}]}')
    write("oip_json", "lifted-keys",
          '{"inputs":[{"name":"y","shape":[3],"datatype":"FP32","d\\u0061ta":[1,2,3],"z\\"data":[4]},'
          '{"name":"z\\"data","shape":[1],"datatype":"FP32","data":[5]}]}')


def oip_binary():
    head = infer(
        {"name": "x", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
    ).encode()
    body = head + struct.pack("<ii", 7, -1) + struct.pack("<I", 2) + b"hi" + struct.pack("<I", 1) + b"!"
    write("oip_binary", "int32-bytes", str(len(head)).encode() + b"\n" + body)
    f32 = infer({"name": "x", "shape": [2, 2], "datatype": "FP32",
                 "parameters": {"binary_data_size": 16}}).encode()
    write("oip_binary", "fp32", str(len(f32)).encode() + b"\n" + f32 + struct.pack("<4f", 1, 2, 3, 4))
    write("oip_binary", "length-past-end", b"99999\n" + f32)
    write("oip_binary", "bytes-framing", b"x\n" + struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0))
    write("oip_binary", "claims-too-much", b"0\n" + struct.pack("<I", 0xFFFFFFFF) + b"ab")


def safetensors_file(tensors, extra_header=None, pad=0):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if extra_header:
        header.update(extra_header)
    text = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + data


def safetensors():
    w = struct.pack("<4f", 1.5, -2.0, 3.25, 4.0)
    write("safetensors", "f32-i64", safetensors_file([
        ("w", "F32", [2, 2], w), ("ids", "I64", [2], struct.pack("<2q", 7, 9))]))
    write("safetensors", "misaligned", safetensors_file([
        ("b", "U8", [1], b"\x01"), ("w", "F32", [1], struct.pack("<f", 2.0)),
        ("h", "F16", [1], b"\x00\x3c"), ("i", "I32", [0], b"")], {"__metadata__": {"k": "v"}}, pad=3))
    write("safetensors", "unsupported-dtype", safetensors_file([("w", "BF16", [1], b"\x80\x3f")]))
    write("safetensors", "overlap", struct.pack("<Q", 60)
          + b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}    ' + b"\0" * 4)
    write("safetensors", "huge-header", struct.pack("<Q", 1 << 62) + b"{}")


def tar_bytes(members, gnu=True):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT if gnu else tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def member(name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data if kind == tarfile.REGTYPE else None


def raw_header(name, size, kind):
    """A ustar header block with any name (tarfile refuses some) and size."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar  \0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def bundle_tar():
    model = [member("m", kind=tarfile.DIRTYPE), member("m/config.toml", b"instances = 1\n"),
             member("m/1", kind=tarfile.DIRTYPE), member("m/1/model.wasm", b"\0asm\x01\0\0\0")]
    write("bundle_tar", "model", tar_bytes(model))
    write("bundle_tar", "model-gz", gzip.compress(tar_bytes(model), mtime=0))
    write("bundle_tar", "pax-long-name", tar_bytes([member("m/" + "d" * 150 + "/f", b"x")], gnu=False))
    write("bundle_tar", "gnu-long-name", tar_bytes([member("m/" + "n" * 150, b"x")]))
    write("bundle_tar", "symlink", tar_bytes([member("m/link", kind=tarfile.SYMTYPE, link="/etc/passwd")]))
    write("bundle_tar", "hardlink", tar_bytes([member("m/a", b"x"), member("m/b", kind=tarfile.LNKTYPE, link="m/a")]))
    write("bundle_tar", "traversal", raw_header(b"m/../../evil", 1, b"0") + b"x".ljust(512, b"\0") + b"\0" * 1024)
    write("bundle_tar", "absolute", raw_header(b"/tmp/evil", 1, b"0") + b"x".ljust(512, b"\0") + b"\0" * 1024)
    write("bundle_tar", "two-models", tar_bytes([member("a/1/x", b"x"), member("b/1/x", b"y")]))
    write("bundle_tar", "top-level-file", tar_bytes([member("config.toml", b"x")]))
    write("bundle_tar", "fifo", tar_bytes([member("m/p", kind=tarfile.FIFOTYPE)]))
    # Content past the 1 MiB limit, 2 MiB of zeros in 2 KiB of gzip.
    write("bundle_tar", "content-bomb", gzip.compress(
        raw_header(b"m/1/model.wasm", 2 << 20, b"0") + b"\0" * (2 << 20) + b"\0" * 1024, mtime=0))
    # A GNU long-name record claiming 20 MiB (the framing limit is 16): tar reads such records whole.
    write("bundle_tar", "long-name-bomb", gzip.compress(
        raw_header(b"././@LongLink", 20 << 20, b"L") + b"a" * (20 << 20), 9, mtime=0))


def model_config():
    for config in sorted((REPO / "examples" / "models").glob("*/config.toml")):
        write("model_config", config.parent.name, config.read_bytes())
    write("model_config", "every-key", "instances = 3\ntimeout_ms = 10\nmemory_limit_mib = 8\n"
          "queue_timeout_ms = 5\nmax_tensors = 7\nmax_tensor_mib = 9\ndevice = \"gpu\"\n"
          "offload_on_queue_timeout = true\ntask = \"embeddings\"\nchat_template = \"chatml\"\n"
          "[parameters]\nlabel = \"x\"\n")
    write("model_config", "huge-limits", "memory_limit_mib = 17592186044416\nmax_tensor_mib = 18446744073709551615\n")
    write("model_config", "zero", "instances = 0\n")
    write("model_config", "unknown-key", "instanses = 3\n")
    write("model_config", "nested", "[parameters]\nx = " + "[" * 100 + "]" * 100 + "\n")


def shape_rules():
    # First byte: the operation (see host/src/fuzz/shapes.rs); then dtype,
    # rank and dimension choices.
    for op in range(25):
        write("shape_rules", f"op{op:02}", bytes([op, 0, 2, 3, 2, 0, 0, 2, 2, 3, 0, 1, 1, 2, 0, 3, 1, 2, 3, 1, 0, 1]))
        write("shape_rules", f"op{op:02}-huge", bytes([op, 0, 3, 0, 11, 9, 0, 0, 3, 11, 0, 10, 0, 1, 7, 6, 9, 1, 1]))
    # The contract 0.1.2 ops on inputs they accept: x is f32 [3, 2] (bytes
    # 0, 2, 3, 2, 0), then each op's operands.
    x = [0, 2, 3, 2, 0]
    # compare: y of x's dtype, [2]; `less`.
    write("shape_rules", "compare-broadcast", bytes([19, *x, 1, 1, 2, 0, 2]))
    # where: condition x, a f32 [2], b a scalar of a's dtype.
    write("shape_rules", "where-broadcast", bytes([20, *x, 0, 1, 2, 3, 1, 0, 1]))
    # gather: i64 indices [2] holding 1 and 0 (value seed 1), on axis 1
    # and on axis -2; value seed 0 holds 1e30, out of range.
    write("shape_rules", "gather-axis1", bytes([21, *x, 0, 1, 2, 1, 1]))
    write("shape_rules", "gather-axis-neg2", bytes([21, *x, 1, 1, 2, 1, 0xFE]))
    write("shape_rules", "gather-out-of-range", bytes([21, *x, 0, 1, 2, 0, 0]))
    # expand: [3, 1] to [3, 4].
    write("shape_rules", "expand", bytes([22, 0, 2, 3, 1, 0, 2, 3, 4]))
    # clip: to [-1, 0.5], and with a NaN bound (refused).
    write("shape_rules", "clip", bytes([23, *x, 1, 2, 1, 4]))
    write("shape_rules", "clip-nan", bytes([23, *x, 1, 8, 0]))
    # attention-varlen: q, k, v f32 [3 tokens, 1 head, 2 wide]; sequences
    # at offsets 0, 1, 3 (one token, then two); scaled by 0.5, not causal.
    qkv = [[0, 3, 3, 1, 2, seed] for seed in range(3)]
    write("shape_rules", "attention-varlen", bytes([24, *sum(qkv, []), 3, 0, 1, 3, 1, 0]))
    # ... and offsets past the tokens, and one near usize::MAX.
    write("shape_rules", "attention-varlen-offsets", bytes([24, *sum(qkv, []), 3, 0, 8, 9, 0, 1]))
    # lstm (op 49, the last slot's second round): x-gates f32 [2 steps, 1,
    # 4], r [4, 1], h0 and c0 [1, 1], backwards; then r of the wrong shape.
    states = [0, 2, 1, 1, 2, 0, 2, 1, 1, 3]
    write("shape_rules", "lstm", bytes([49, 0, 3, 2, 1, 4, 0, 0, 2, 4, 1, 1, *states, 1]))
    write("shape_rules", "lstm-bad-r", bytes([49, 0, 3, 2, 1, 4, 0, 0, 2, 4, 2, 1, *states, 0]))
    # ... and a state of no width: x-gates [2, 1, 0], r [0, 0], h0 and c0 [1, 0].
    empty = [0, 2, 1, 0, 2, 0, 2, 1, 0, 3]
    write("shape_rules", "lstm-empty", bytes([49, 0, 3, 2, 1, 0, 0, 0, 2, 0, 0, 1, *empty, 0]))


if __name__ == "__main__":
    oip_json()
    oip_binary()
    safetensors()
    bundle_tar()
    model_config()
    shape_rules()
