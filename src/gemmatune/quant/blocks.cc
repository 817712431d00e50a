#include "gemmatune/quant/blocks.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "gemmatune/tensor/dtype.h"
#include "gemmatune/util/error.h"

namespace gt::quant {
namespace {

constexpr BlockInfo kInfo[] = {
    {BlockType::Q8_0, "q8_0", 32, 34},
    {BlockType::Q4_0, "q4_0", 32, 18},
    {BlockType::Q4_K, "q4_k", 256, 144},
};

void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// C's roundf: halves away from zero (ggml's Q8_0 reference rounds so).
float round_half_away(float v) { return std::round(v); }

}  // namespace

const BlockInfo& block_info(BlockType t) {
  for (const auto& i : kInfo)
    if (i.type == t) return i;
  fail("unknown block type");
}

BlockType block_type_from_name(const std::string& name) {
  std::string n = name;
  for (auto& c : n) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& i : kInfo)
    if (n == i.name) return i.type;
  fail("unknown quantization type '", name, "' (expected q8_0, q4_0 or q4_k)");
}

int64_t quantized_bytes(BlockType t, int64_t n, const std::string& what) {
  const BlockInfo& b = block_info(t);
  if (n < 0 || n % b.block_values != 0)
    fail(what, ": ", n, " values are not a whole number of ", b.name, " blocks of ", b.block_values);
  return n / b.block_values * b.block_bytes;
}

void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  quantized_bytes(BlockType::Q8_0, n);
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 34) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    for (int i = 0; i < 32; ++i) out[2 + i] = uint8_t(int8_t(round_half_away(x[i] * id)));
  }
}

void quantize_q4_0(const float* x, int64_t n, uint8_t* out) {
  quantized_bytes(BlockType::Q4_0, n);
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 18) {
    // The value of largest magnitude (the first one on a tie) maps to -8.
    float amax = 0.0f, vmax = 0.0f;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        vmax = x[i];
      }
    const float d = vmax / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    for (int j = 0; j < 16; ++j) {
      const int lo = std::min(15, int(x[j] * id + 8.5f));
      const int hi = std::min(15, int(x[j + 16] * id + 8.5f));
      out[2 + j] = uint8_t(lo | (hi << 4));
    }
  }
}

void dequantize_q8_0(const uint8_t* in, int64_t n, float* y) {
  quantized_bytes(BlockType::Q8_0, n);
  for (int64_t b = 0; b < n / 32; ++b, in += 34, y += 32) {
    const float d = load_f16(in);
    for (int i = 0; i < 32; ++i) y[i] = float(int8_t(in[2 + i])) * d;
  }
}

void dequantize_q4_0(const uint8_t* in, int64_t n, float* y) {
  quantized_bytes(BlockType::Q4_0, n);
  for (int64_t b = 0; b < n / 32; ++b, in += 18, y += 32) {
    const float d = load_f16(in);
    for (int j = 0; j < 16; ++j) {
      y[j] = float(int(in[2 + j] & 0xf) - 8) * d;
      y[j + 16] = float(int(in[2 + j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_k(const uint8_t* in, int64_t n, float* y) {
  quantized_bytes(BlockType::Q4_K, n);
  for (int64_t b = 0; b < n / 256; ++b, in += 144) {
    const float d = load_f16(in), dmin = load_f16(in + 2);
    const uint8_t* s = in + 4;  // 12 bytes: 8 six-bit scales and 8 six-bit mins
    const uint8_t* q = in + 16;
    for (int sub = 0; sub < 8; ++sub) {
      int sc, m;
      if (sub < 4) {
        sc = s[sub] & 63;
        m = s[sub + 4] & 63;
      } else {
        sc = (s[sub + 4] & 0xf) | ((s[sub - 4] >> 6) << 4);
        m = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4);
      }
      const float dd = d * float(sc), mm = dmin * float(m);
      // Sub-blocks come in pairs sharing 32 bytes: the even one in the low nibbles.
      const uint8_t* qq = q + 32 * (sub / 2);
      const int shift = (sub % 2) * 4;
      for (int l = 0; l < 32; ++l) *y++ = dd * float((qq[l] >> shift) & 0xf) - mm;
    }
  }
}

void dequantize(BlockType t, const uint8_t* in, int64_t n, float* y) {
  switch (t) {
    case BlockType::Q8_0: return dequantize_q8_0(in, n, y);
    case BlockType::Q4_0: return dequantize_q4_0(in, n, y);
    case BlockType::Q4_K: return dequantize_q4_k(in, n, y);
  }
}

void quantize(BlockType t, const float* x, int64_t n, uint8_t* out) {
  switch (t) {
    case BlockType::Q8_0: return quantize_q8_0(x, n, out);
    case BlockType::Q4_0: return quantize_q4_0(x, n, out);
    default: fail("quantize: ", block_info(t).name, " quantization is not implemented (dequantize only)");
  }
}

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
}  // namespace

bool quantize_policy(const std::string& name, const std::vector<int64_t>& shape) {
  if (shape.size() < 2 || shape.size() > 3 || shape.back() % 32 != 0 || shape.back() == 0) return false;
  for (const char* tower : {"vision", "audio", "multi_modal", "per_layer"})
    if (name.find(tower) != std::string::npos) return false;
  if (shape.size() == 3) return ends_with(name, "experts.gate_up_proj") || ends_with(name, "experts.down_proj");
  if (ends_with(name, "embed_tokens.weight") || ends_with(name, "lm_head.weight")) return true;
  if (name.find("layers.") == std::string::npos || name.find("router") != std::string::npos) return false;
  for (const char* p : {".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".o_proj.weight", ".gate_proj.weight",
                        ".up_proj.weight", ".down_proj.weight"})
    if (ends_with(name, p)) return true;
  return false;
}

}  // namespace gt::quant
