#!/usr/bin/env python3
"""Writes tests/data/quant/ggml_vectors.safetensors: inputs and the bytes/values that the `gguf`
Python package (ggml's reference quantizers, bit-exact with ggml-quants.c) produces for them.
Run once (pip install gguf numpy safetensors); the test (tests/test_quant_blocks.cc) reads the file,
Python is never on the test path.

    python3 scripts/gen_quant_vectors.py [--out tests/data/quant/ggml_vectors.safetensors]
"""
import argparse
import os

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file


def inputs(rng):
    """Blocks of 32 that exercise the edge cases: gaussian weights, outliers, zeros, ties of magnitude,
    exact .5 rounding points, f16-subnormal and large scales, negative-max blocks."""
    parts = [
        rng.normal(0, 0.02, 32 * 64),                     # typical weights
        rng.normal(0, 1.0, 32 * 16) * (rng.random(32 * 16) < 0.05) * 40 + rng.normal(0, 0.5, 32 * 16),  # outliers
        np.zeros(32),                                      # an all-zero block
        np.tile([1.0, -1.0], 16),                          # magnitude ties: first one wins
        np.tile([-2.0, 2.0], 16),
        (np.arange(32) - 16) / 16 * 127 / 127,             # exact grid points
        (np.arange(32) + 0.5) / 32 * np.where(np.arange(32) % 2, 1, -1),  # .5 rounding points
        rng.normal(0, 1e-6, 32 * 4),                       # f16-subnormal scales
        rng.normal(0, 1e3, 32 * 4),                        # large scales
        -np.abs(rng.normal(0, 1, 32 * 4)),                 # all negative
        np.abs(rng.normal(0, 1, 32 * 4)),                  # all positive
    ]
    return np.concatenate(parts).astype(np.float32)


def q4_k_blocks(rng, n_blocks):
    """Random but realistic Q4_K blocks: f16 d/dmin of weight scale, random 6-bit scales and 4-bit values."""
    b = rng.integers(0, 256, size=(n_blocks, 144), dtype=np.uint8)
    d = np.abs(rng.normal(0, 0.002, n_blocks)).astype(np.float16)
    dmin = np.abs(rng.normal(0, 0.004, n_blocks)).astype(np.float16)
    b[:, 0:2] = d.view(np.uint8).reshape(n_blocks, 2)
    b[:, 2:4] = dmin.view(np.uint8).reshape(n_blocks, 2)
    return b


def small_gguf(path, rng):
    """A small GGUF file written by the gguf package's GGUFWriter: metadata of every value type and
    tensors of the types we read, for tests/test_gguf.cc."""
    w = gguf.GGUFWriter(path, arch="gemma3")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.125)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "h\u00e9llo")
    w.add_array("t.arr_str", ["a", "bb", "<start_of_turn>"])
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_context_length(32768)
    x = np.arange(64 * 3, dtype=np.float32).reshape(3, 64) / 50 - 1.5
    w.add_tensor("f32", x)
    w.add_tensor("f16", x.astype(np.float16))
    w.add_tensor("q8_0", gguf.quants.quantize(x, T.Q8_0), raw_dtype=T.Q8_0)
    w.add_tensor("q4_0", gguf.quants.quantize(x, T.Q4_0), raw_dtype=T.Q4_0)
    w.add_tensor("vec", np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "quant", "ggml_vectors.safetensors"))
    a = ap.parse_args()
    rng = np.random.default_rng(20261202)
    x = inputs(rng)
    out = {"x": x}
    for name, qt in (("q8_0", T.Q8_0), ("q4_0", T.Q4_0)):
        q = gguf.quants.quantize(x.reshape(-1, 32), qt)
        out[name + ".q"] = np.ascontiguousarray(q.reshape(-1))
        out[name + ".y"] = gguf.quants.dequantize(q, qt).reshape(-1).astype(np.float32)
        # Quantizing the dequantized values again gives the same values (not always the same bytes:
        # a block whose f16 scale underflows to 0 keeps nonzero codes the first time).
        q2 = gguf.quants.quantize(out[name + ".y"].reshape(-1, 32), qt)
        assert np.array_equal(gguf.quants.dequantize(q2, qt).reshape(-1), out[name + ".y"]), name
    kb = q4_k_blocks(rng, 24)
    out["q4_k.q"] = kb.reshape(-1)
    out["q4_k.y"] = gguf.quants.dequantize(kb, T.Q4_K).reshape(-1).astype(np.float32)
    save_file(out, a.out, metadata={"generator": f"gguf {gguf.__version__ if hasattr(gguf, '__version__') else ''} quants",
                                    "script": "scripts/gen_quant_vectors.py"})
    print(a.out, {k: v.shape for k, v in out.items()})
    small_gguf(os.path.join(os.path.dirname(a.out), "small.gguf"), rng)


if __name__ == "__main__":
    main()
