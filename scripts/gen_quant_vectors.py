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


if __name__ == "__main__":
    main()
