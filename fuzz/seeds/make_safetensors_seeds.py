#!/usr/bin/env python3
"""Writes the seed inputs of fuzz_safetensors into fuzz/seeds/safetensors/ (committed; rerun after
changing this script). Small hand-made files: every dtype, metadata, empty and scalar tensors,
unpadded headers, and sharded folders (index + shards, and shards without an index), packed as
fuzz/fuzz_safetensors.cc reads them (files separated by SEP)."""
import json
import os
import struct

SEP = b"\n#####\n"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "safetensors")
SIZES = {"F32": 4, "BF16": 2, "F16": 2, "I32": 4, "I64": 8, "U8": 1, "BOOL": 1, "F64": 8}


def st(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape); data bytes are a simple counting pattern."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        nb = n * SIZES[dt]
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + nb]}
        data += bytes((i * 7 + 1) & 0x7F for i in range(nb))
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def index(weight_map):
    return json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=1).encode()


seeds = {
    "single_f32": st([("model.embed_tokens.weight", "F32", [4, 2]), ("model.norm.weight", "F32", [2])], {"format": "pt"}),
    "single_bf16": st([("a", "BF16", [3, 2]), ("b", "BF16", [1])], {"format": "pt"}),
    "all_dtypes": st([(f"t_{d.lower()}", d, [2]) for d in SIZES]),
    "empty_and_scalar": st([("empty", "F32", [0, 3]), ("scalar", "F16", []), ("x", "I64", [1, 1, 1])]),
    "unpadded": st([("odd", "U8", [3]), ("f", "F32", [1]), ("h", "F16", [2])], pad=False),
    "no_tensors": st([], {"format": "pt", "note": "only metadata"}),
}
s1 = st([("model.layers.0.w", "F32", [2, 2]), ("model.norm.weight", "F32", [2])], {"format": "pt"})
s2 = st([("model.layers.1.w", "BF16", [2, 2]), ("lm_head.weight", "F16", [3, 2])], {"format": "pt"})
wm = {"model.layers.0.w": "model-00001-of-00002.safetensors", "model.norm.weight": "model-00001-of-00002.safetensors",
      "model.layers.1.w": "model-00002-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}
seeds["sharded_2"] = index(wm) + SEP + s1 + SEP + s2
seeds["sharded_no_index"] = SEP + s1 + SEP + s2
one = st([("model.embed_tokens.weight", "BF16", [2, 2])])
seeds["sharded_1"] = index({"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}) + SEP + one
os.makedirs(OUT, exist_ok=True)
for name, b in seeds.items():
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write(b)
print(f"wrote {len(seeds)} seeds into {OUT}")
