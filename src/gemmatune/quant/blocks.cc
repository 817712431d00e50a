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

// ---- Q4_K: ggml's reference quantizer (quantize_row_q4_K_ref, ggml-quants.c), reproduced bit for
// bit: the same float operations in the same order. This file is compiled with -ffp-contract=off
// (CMakeLists.txt), as ggml-base is compiled on x86-64 (no FMA): a fused multiply-add would round
// differently. Checked against ggml's own C output (tests/data/quant/ggml_q4k_vectors.safetensors).
namespace {

// ggml's nearest_int: v + 1.5 * 2^23 rounds v to the nearest integer (ties to even) in the low
// mantissa bits. Exact for |v| <= 2^22 (every caller here); kept as the same bit trick so that
// the result also agrees where it is not (NaN -> 0).
int nearest_int(float v) {
  const float t = v + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &t, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// Weighted least-squares fit of a sub-block of 32 values: x[i] ~ scale * L[i] + mn, L in [0, 15],
// mn <= 0 (ggml's make_qkx2_quants with nmax 15, rmin -1, rdelta 0.1, nstep 20, squared error).
// Starts from the min/max grid, then tries the grids of 21 inverse scales (14 + 0.1 s) / (max - mn)
// and keeps the least-squares scale/offset of each candidate labelling when it lowers the
// weighted error. As in ggml, a better candidate's offset becomes the `mn` that the following
// candidates' grids are computed from. Returns the scale; *neg_mn = -mn.
float fit_q4_k_sub_block(const float* x, const float* w, uint8_t* L, float* neg_mn) {
  constexpr int n = 32, nmax = 15, nstep = 20;
  constexpr float rmin = -1.0f, rdelta = 0.1f;
  float mn = x[0], mx = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < mn) mn = x[i];
    if (x[i] > mx) mx = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (mn > 0) mn = 0;
  if (mx == mn) {
    std::memset(L, 0, n);
    *neg_mn = -mn;
    return 0.0f;
  }
  float iscale = float(nmax) / (mx - mn);
  float scale = 1.0f / iscale;
  float best = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - mn));
    L[i] = uint8_t(std::clamp(l, 0, nmax));
    const float diff = scale * float(L[i]) + mn - x[i];
    best += w[i] * (diff * diff);
  }
  uint8_t cand[n];
  for (int s = 0; s <= nstep; ++s) {
    iscale = (rmin + rdelta * float(s) + float(nmax)) / (mx - mn);
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax);
      cand[i] = uint8_t(l);
      const float wl = w[i] * float(l);
      sum_l += wl;
      sum_l2 += wl * float(l);
      sum_xl += wl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (!(D > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    float this_mn = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_mn > 0) {
      this_mn = 0;
      this_scale = sum_xl / sum_l2;
    }
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * float(cand[i]) + this_mn - x[i];
      err += w[i] * (diff * diff);
    }
    if (err < best) {
      std::memcpy(L, cand, n);
      best = err;
      scale = this_scale;
      mn = this_mn;
    }
  }
  *neg_mn = -mn;
  return scale;
}

}  // namespace

void quantize_q4_k(const float* x, int64_t n, uint8_t* out) {
  quantized_bytes(BlockType::Q4_K, n);
  for (int64_t b = 0; b < n / 256; ++b, x += 256, out += 144) {
    uint8_t L[256];
    float scales[8], mins[8];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
      const float* xs = x + 32 * j;
      // Weights of the fit: the sub-block's RMS plus each value's magnitude.
      float sum_x2 = 0.0f;
      for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
      const float av_x = std::sqrt(sum_x2 / 32.0f);
      float w[32];
      for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(xs[l]);
      scales[j] = fit_q4_k_sub_block(xs, w, L + 32 * j, &mins[j]);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    // 6-bit sub-block scales and mins relative to the super-block's d and dmin.
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
      // As in ggml: the int is narrowed to uint8_t (mod 256) before the clamp to 63.
      ls[j] = std::min<uint8_t>(63, uint8_t(nearest_int(inv_scale * scales[j])));
      lm[j] = std::min<uint8_t>(63, uint8_t(nearest_int(inv_min * mins[j])));
    }
    uint8_t* s = out + 4;  // sub-blocks 0-3: 6 bits in bytes 0-3 / 4-7; 4-7: low 4 bits in 8-11, high 2 on top
    for (int j = 0; j < 4; ++j) {
      s[j] = uint8_t(ls[j] | ((ls[j + 4] >> 4) << 6));
      s[j + 4] = uint8_t(lm[j] | ((lm[j + 4] >> 4) << 6));
      s[j + 8] = uint8_t((ls[j + 4] & 0xf) | ((lm[j + 4] & 0xf) << 4));
    }
    store_f16(out, max_scale / 63.0f);
    store_f16(out + 2, max_min / 63.0f);
    // Requantize each value against the rounded (f16 x 6-bit) scale and min; a sub-block whose
    // scale rounded to 0 keeps the fit's labels.
    const float d_all = load_f16(out), dmin_all = load_f16(out + 2);
    for (int j = 0; j < 8; ++j) {
      const float d = d_all * float(ls[j]);
      if (d == 0.0f) continue;
      const float dm = dmin_all * float(lm[j]);
      for (int i = 0; i < 32; ++i) L[32 * j + i] = uint8_t(std::clamp(nearest_int((x[32 * j + i] + dm) / d), 0, 15));
    }
    // Nibbles: sub-blocks 2p (low) and 2p + 1 (high) share bytes 32p .. 32p + 31.
    uint8_t* q = out + 16;
    for (int p = 0; p < 4; ++p)
      for (int l = 0; l < 32; ++l) q[32 * p + l] = uint8_t(L[64 * p + l] | (L[64 * p + 32 + l] << 4));
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
    case BlockType::Q4_K: return quantize_q4_k(x, n, out);
  }
}

BlockType block_type_for(BlockType want, int64_t k) {
  if (want == BlockType::Q4_K && k % 256 != 0) return BlockType::Q4_0;
  return want;
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
