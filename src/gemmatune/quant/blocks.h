// ggml's block formats, byte for byte: Q8_0 and Q4_0 (quantize and dequantize, bit-exact with
// ggml's reference quantizers, checked against vectors from the `gguf` Python package) and Q4_K
// (quantize bit-exact with ggml's quantize_row_q4_K_ref, checked against ggml's own C output, since
// the `gguf` package has no Q4_K quantizer; dequantize as ggml, so the blocks of published Q4_K
// GGUF files are used as stored).
//
//   Q8_0: 32 values -> f16 scale d, 32 x int8 q;             x = d * q            (34 bytes)
//   Q4_0: 32 values -> f16 scale d, 16 bytes of 4-bit q;    x = d * (q - 8)      (18 bytes)
//         byte j holds value j in its low nibble and value j + 16 in its high nibble.
//   Q4_K: 256 values in 8 sub-blocks of 32 -> f16 d, f16 dmin, 12 bytes of 6-bit sub-block
//         scales/mins, 128 bytes of 4-bit q;                 x = d*sc*q - dmin*m  (144 bytes)
//         bytes 4-15: sub-blocks j < 4 have scale = s[j] & 63, min = s[j+4] & 63; j >= 4 have
//         scale = (s[j+4] & 15) | (s[j-4] >> 6) << 4, min = (s[j+4] >> 4) | (s[j] >> 6) << 4.
//         bytes 16-143: sub-blocks 2p (low nibbles) and 2p+1 (high nibbles) share bytes 32p..32p+31.
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

// n must be a multiple of the block size (32 for Q8_0/Q4_0, 256 for Q4_K).
void quantize_q8_0(const float* x, int64_t n, uint8_t* out);
void quantize_q4_0(const float* x, int64_t n, uint8_t* out);
// ggml's reference Q4_K quantizer (no importance matrix): per sub-block of 32 a weighted
// least-squares scale/min fit, both then quantized to 6 bits against the super-block's f16 d/dmin.
void quantize_q4_k(const float* x, int64_t n, uint8_t* out);

void dequantize_q8_0(const uint8_t* in, int64_t n, float* y);
void dequantize_q4_0(const uint8_t* in, int64_t n, float* y);
void dequantize_q4_k(const uint8_t* in, int64_t n, float* y);  // n a multiple of 256
void dequantize(BlockType t, const uint8_t* in, int64_t n, float* y);
void quantize(BlockType t, const float* x, int64_t n, uint8_t* out);

// The block type a tensor whose rows have k values gets when `want` is asked for: Q4_K needs
// k % 256 == 0 and falls back to Q4_0 otherwise: the same 4.5 bits per weight, so a q4_k model is
// exactly as large as a q4_0 one and never of lower quality (llama.cpp falls back to Q5_0, 5.5
// bits, which we do not have). Such k: Gemma 3 1B's hidden size 1152, Gemma 4 26B-A4B's MLP and
// expert widths 2112 and 704 (docs/QUANTIZATION.md).
BlockType block_type_for(BlockType want, int64_t k);

// The quantization policy (docs/QUANTIZATION.md): whether a checkpoint tensor (HF name, shape) is
// stored in blocks. Quantized: the language model's linear projections (q/k/v/o, gate/up/down, MoE
// experts per expert) and the token embedding / LM head (tied or not), when their last dimension
// is a multiple of 32. Kept as stored: norms, scalars, the MoE router, the per-layer-embedding
// tables and projections (Gemma 4 PLE), vision/audio towers, anything else.
bool quantize_policy(const std::string& name, const std::vector<int64_t>& shape);

}  // namespace gt::quant
