// ggml's block formats, byte for byte: Q8_0 and Q4_0 (quantize and dequantize, bit-exact with
// ggml's reference quantizers, checked against vectors from the `gguf` Python package) and Q4_K
// (dequantize: the blocks of published Q4_K_M GGUF files).
//
//   Q8_0: 32 values -> f16 scale d, 32 x int8 q;             x = d * q            (34 bytes)
//   Q4_0: 32 values -> f16 scale d, 16 bytes of 4-bit q;    x = d * (q - 8)      (18 bytes)
//         byte j holds value j in its low nibble and value j + 16 in its high nibble.
//   Q4_K: 256 values in 8 sub-blocks of 32 -> f16 d, f16 dmin, 12 bytes of 6-bit sub-block
//         scales/mins, 128 bytes of 4-bit q;                 x = d*sc*q - dmin*m  (144 bytes)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gt::quant {

enum class BlockType { Q8_0, Q4_0, Q4_K };

struct BlockInfo {
  BlockType type;
  const char* name;     // "q8_0", "q4_0", "q4_k"
  int64_t block_values;  // values per block
  int64_t block_bytes;   // bytes per block
};

const BlockInfo& block_info(BlockType t);
// Parses "q8_0" | "q4_0" | "q4_k" (case-insensitive); fails listing the known names.
BlockType block_type_from_name(const std::string& name);
// Bytes of n values (n a multiple of the block size; fails otherwise, naming `what`).
int64_t quantized_bytes(BlockType t, int64_t n, const std::string& what = "tensor");

// n must be a multiple of the block size (32 for Q8_0/Q4_0).
void quantize_q8_0(const float* x, int64_t n, uint8_t* out);
void quantize_q4_0(const float* x, int64_t n, uint8_t* out);

void dequantize_q8_0(const uint8_t* in, int64_t n, float* y);
void dequantize_q4_0(const uint8_t* in, int64_t n, float* y);
void dequantize_q4_k(const uint8_t* in, int64_t n, float* y);  // n a multiple of 256
void dequantize(BlockType t, const uint8_t* in, int64_t n, float* y);
void quantize(BlockType t, const float* x, int64_t n, uint8_t* out);  // Q8_0 / Q4_0

// The quantization policy (docs/QUANTIZATION.md): whether a checkpoint tensor (HF name, shape) is
// stored in blocks. Quantized: the language model's linear projections (q/k/v/o, gate/up/down, MoE
// experts per expert) and the token embedding / LM head (tied or not), when their last dimension
// is a multiple of 32. Kept as stored: norms, scalars, the MoE router, the per-layer-embedding
// tables and projections (Gemma 4 PLE), vision/audio towers, anything else.
bool quantize_policy(const std::string& name, const std::vector<int64_t>& shape);

}  // namespace gt::quant
