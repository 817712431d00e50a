// Comparison path: oneDNN f32 matmul. oneDNN 2.6.3 on an AVX2-only CPU (no avx512_core) has no
// bf16 or f16 matmul at all ("could not create a primitive descriptor" for bf16/f16 src or weights),
// and dispatches f32 to `gemm:jit`. Non-f32 weights are therefore converted to f32 per call, in
// row chunks of at most kChunkBytes into a reused scratch buffer, and each chunk is one matmul
// (accumulation through the `sum` post-op). Primitives are cached per shape/strides.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "gemmatune/kernels/linear.h"
#include "gemmatune/util/error.h"

namespace gt::linear_detail {

namespace {

constexpr size_t kChunkBytes = size_t(8) << 20;

struct Dnnl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::mutex mu;
  // key: m, kr, nc, lda, ldb_is_trans, ldb, ldc, accumulate
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, bool, int64_t, int64_t, bool>, dnnl::matmul> cache;
};

Dnnl& dnnl_state() {
  static Dnnl d;
  return d;
}

// C[m, nc] (+)= A[m, kr] (row stride lda) · B[kr, nc]; B element (p, j) at b[p + j*ldb] when
// `trans` (weights stored [nc, kr]) else b[p*ldb + j].
void matmul_f32(const float* a, int64_t m, int64_t kr, int64_t lda, const float* b, int64_t nc, bool trans,
                int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  using namespace dnnl;
  Dnnl& d = dnnl_state();
  std::lock_guard<std::mutex> lock(d.mu);
  auto key = std::make_tuple(m, kr, nc, lda, trans, ldb, ldc, accumulate);
  auto it = d.cache.find(key);
  memory::desc ad({m, kr}, memory::data_type::f32, memory::dims{lda, 1});
  memory::desc bd({kr, nc}, memory::data_type::f32, trans ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  memory::desc cd({m, nc}, memory::data_type::f32, memory::dims{ldc, 1});
  if (it == d.cache.end()) {
    primitive_attr attr;
    if (accumulate) {
      post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    matmul::primitive_desc pd(matmul::desc(ad, bd, cd), attr, d.eng);
    it = d.cache.emplace(key, matmul(pd)).first;
  }
  memory am(ad, d.eng, const_cast<float*>(a)), bm(bd, d.eng, const_cast<float*>(b)), cm(cd, d.eng, c);
  it->second.execute(d.strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  d.strm.wait();
}

// n stored elements -> f32, AVX2 (bf16: zero-extend + shift; f16: vcvtph2ps).
void convert(DType t, const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (t == DType::BF16) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(
                                    _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))), 16)));
  } else if (t == DType::F16) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  }
  to_f32(t, static_cast<const uint8_t*>(src) + size_t(i) * dtype_size(t), dst + i, size_t(n - i));
}

float* convert_rows(const Weight2D& w, int64_t r0, int64_t rows) {
  thread_local std::vector<float> scratch;
  const size_t cnt = size_t(rows) * size_t(w.k);
  if (scratch.size() < cnt) scratch.resize(cnt);
  float* dst = scratch.data();
  const size_t es = dtype_size(w.dtype);
  const uint8_t* src = static_cast<const uint8_t*>(w.data) + size_t(r0) * size_t(w.k) * es;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    convert(w.dtype, src + size_t(r) * size_t(w.k) * es, dst + size_t(r) * size_t(w.k), w.k);
  return dst;
}

int64_t chunk_rows(const Weight2D& w) {
  return std::max<int64_t>(64, int64_t(kChunkBytes / (size_t(std::max<int64_t>(w.k, 1)) * sizeof(float))) / 64 * 64);
}

}  // namespace

void onednn_forward(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                    int64_t ldy) {
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  if (m <= 0 || w.n <= 0 || w.k <= 0 || w.quantized()) return gemm_forward(x, m, w, y, accumulate, ldx, ldy);
  if (w.dtype == DType::F32)
    return matmul_f32(x, m, w.k, ldx, static_cast<const float*>(w.data), w.n, true, w.k, y, ldy, accumulate);
  const int64_t ch = chunk_rows(w);
  for (int64_t j0 = 0; j0 < w.n; j0 += ch) {
    const int64_t rows = std::min(ch, w.n - j0);
    const float* b = convert_rows(w, j0, rows);
    matmul_f32(x, m, w.k, ldx, b, rows, true, w.k, y + j0, ldy, accumulate);
  }
}

void onednn_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
  if (m <= 0 || w.n <= 0 || w.k <= 0 || w.quantized()) return gemm_backward_input(dy, m, w, dx, accumulate);
  if (w.dtype == DType::F32)
    return matmul_f32(dy, m, w.n, w.n, static_cast<const float*>(w.data), w.k, false, w.k, dx, w.k, accumulate);
  const int64_t ch = chunk_rows(w);
  for (int64_t p0 = 0; p0 < w.n; p0 += ch) {
    const int64_t rows = std::min(ch, w.n - p0);
    const float* b = convert_rows(w, p0, rows);
    matmul_f32(dy + p0, m, rows, w.n, b, w.k, false, w.k, dx, w.k, accumulate || p0 > 0);
  }
}

}  // namespace gt::linear_detail
