/* Tooling only (scripts/gen_q4k_vectors.sh builds and runs it; never on the test path).
 *
 * Writes tests/data/quant/ggml_q4k_vectors.safetensors: seeded inputs and what ggml's own C
 * reference makes of them, linked from the ggml sources vendored in the llama-cpp-python sdist:
 *   x    F32 [n]          inputs (n = 256 * blocks; one case per block, see cases below)
 *   q    U8  [144 * b]    quantize_row_q4_K_ref(x)
 *   y    F32 [n]          dequantize_row_q4_K(q)
 *   q2   U8  [144 * b]    quantize_row_q4_K_ref(y)   (the round trip)
 *   y2   F32 [n]          dequantize_row_q4_K(q2)
 * The `gguf` Python package has no Q4_K quantizer (gguf.quants.Q4_K only dequantizes), hence C.
 * ggml-quants.c is compiled as ggml-base is on x86-64 (C, no FMA contraction), see the .sh. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-common.h"
#include "ggml-quants.h"

/* Symbols ggml-quants.c references from ggml.c (never reached by the Q4_K functions). */
void ggml_abort(const char* file, int line, const char* fmt, ...) {
  fprintf(stderr, "ggml_abort %s:%d %s\n", file, line, fmt);
  abort();
}
size_t ggml_row_size(enum ggml_type t, int64_t ne) { (void)t; (void)ne; abort(); }
const char* ggml_type_name(enum ggml_type t) { (void)t; abort(); }
size_t ggml_type_size(enum ggml_type t) { (void)t; abort(); }

/* splitmix64 + Box-Muller: seeded, self-contained. */
static uint64_t s_state = 20261202u;
static uint64_t next_u64(void) {
  uint64_t z = (s_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double uniform(void) { return ((double)(next_u64() >> 11) + 0.5) / 9007199254740992.0; }
static double normal(void) { return sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()); }
/* Student t with nu degrees of freedom (heavy tails, like trained weights' outliers). */
static double student_t(int nu) {
  double c = 0;
  for (int i = 0; i < nu; ++i) {
    const double z = normal();
    c += z * z;
  }
  return normal() / sqrt(c / nu);
}

enum { QK = 256, MAXB = 64 };
static float X[MAXB * QK];
static int nblk = 0;

static float* block(void) {
  if (nblk == MAXB) abort();
  return X + QK * nblk++;
}

static void cases(void) {
  float* b;
  for (int i = 0; i < 16; ++i) { /* typical weights */
    b = block();
    for (int l = 0; l < QK; ++l) b[l] = (float)(0.02 * normal());
  }
  for (int i = 0; i < 6; ++i) { /* heavy tails: t(3) and rare big outliers */
    b = block();
    for (int l = 0; l < QK; ++l) b[l] = (float)(0.02 * student_t(3));
  }
  for (int i = 0; i < 2; ++i) {
    b = block();
    for (int l = 0; l < QK; ++l) b[l] = (float)(0.5 * normal() + (uniform() < 0.03 ? 20.0 * normal() : 0.0));
  }
  b = block(); /* all zero */
  for (int l = 0; l < QK; ++l) b[l] = 0.0f;
  b = block(); /* constant positive, constant negative */
  for (int l = 0; l < QK; ++l) b[l] = 0.375f;
  b = block();
  for (int l = 0; l < QK; ++l) b[l] = -1.25f;
  b = block(); /* sub-blocks: zero, constant, normal, constant negative, ... */
  for (int l = 0; l < QK; ++l) {
    const int s = l / 32;
    b[l] = s % 4 == 0 ? 0.0f : s % 4 == 1 ? 0.125f : s % 4 == 2 ? (float)normal() : -3.0f;
  }
  b = block(); /* one sub-block much larger than the others (6-bit scale/min saturation) */
  for (int l = 0; l < QK; ++l) b[l] = (float)((l / 32 == 5 ? 100.0 : 0.01) * normal());
  for (int e = 0; e < 3; ++e) { /* tiny: f16-normal, f16-subnormal and flushed super-scales */
    const double sd[3] = {1e-3, 1e-6, 1e-9};
    b = block();
    for (int l = 0; l < QK; ++l) b[l] = (float)(sd[e] * normal());
  }
  for (int e = 0; e < 2; ++e) { /* large */
    const double sd[2] = {1e2, 1e4};
    b = block();
    for (int l = 0; l < QK; ++l) b[l] = (float)(sd[e] * normal());
  }
  for (int i = 0; i < 2; ++i) { /* negative only */
    b = block();
    for (int l = 0; l < QK; ++l) b[l] = (float)(-fabs(normal()) * (i ? 1.0 : 0.05));
  }
  b = block(); /* positive only, shifted away from 0 */
  for (int l = 0; l < QK; ++l) b[l] = (float)(1.0 + fabs(normal()));
  b = block(); /* exact 4-bit grid points and .5 rounding ties */
  for (int l = 0; l < QK; ++l) b[l] = (float)(l % 16) / 15.0f - (l / 128 ? 0.5f / 15.0f : 0.0f);
  b = block(); /* small integers */
  for (int l = 0; l < QK; ++l) b[l] = (float)((int)(next_u64() % 31) - 15);
}

struct tensor {
  const char* name;
  const char* dtype;
  const void* data;
  size_t bytes, elems;
};

static void write_safetensors(const char* path, const struct tensor* t, int nt) {
  char hdr[4096];
  int len = snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"generator\":\"ggml quantize_row_q4_K_ref / dequantize_row_q4_K"
                     " (llama-cpp-python 0.3.36 sdist)\",\"script\":\"scripts/gen_q4k_vectors.sh\"}");
  size_t off = 0;
  for (int i = 0; i < nt; ++i) {
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%zu],\"data_offsets\":[%zu,%zu]}",
                    t[i].name, t[i].dtype, t[i].elems, off, off + t[i].bytes);
    off += t[i].bytes;
  }
  len += snprintf(hdr + len, sizeof hdr - (size_t)len, "}");
  while (len % 8) hdr[len++] = ' ';
  FILE* f = fopen(path, "wb");
  if (!f) {
    perror(path);
    exit(1);
  }
  const uint64_t n = (uint64_t)len;
  fwrite(&n, 8, 1, f);
  fwrite(hdr, 1, (size_t)len, f);
  for (int i = 0; i < nt; ++i) fwrite(t[i].data, 1, t[i].bytes, f);
  fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUT.safetensors\n", argv[0]);
    return 2;
  }
  cases();
  const int64_t n = (int64_t)nblk * QK;
  static block_q4_K q[MAXB], q2[MAXB];
  static float y[MAXB * QK], y2[MAXB * QK];
  _Static_assert(sizeof(block_q4_K) == 144, "block_q4_K is 144 bytes");
  quantize_row_q4_K_ref(X, q, n);
  dequantize_row_q4_K(q, y, n);
  quantize_row_q4_K_ref(y, q2, n);
  dequantize_row_q4_K(q2, y2, n);
  const struct tensor t[] = {
      {"x", "F32", X, sizeof(float) * (size_t)n, (size_t)n},
      {"q", "U8", q, 144 * (size_t)nblk, 144 * (size_t)nblk},
      {"y", "F32", y, sizeof(float) * (size_t)n, (size_t)n},
      {"q2", "U8", q2, 144 * (size_t)nblk, 144 * (size_t)nblk},
      {"y2", "F32", y2, sizeof(float) * (size_t)n, (size_t)n},
  };
  write_safetensors(argv[1], t, 5);
  int same_q = memcmp(q, q2, 144 * (size_t)nblk) == 0, same_y = memcmp(y, y2, sizeof(float) * (size_t)n) == 0;
  printf("%s: %d blocks; round trip: bytes %s, values %s\n", argv[1], nblk, same_q ? "equal" : "differ",
         same_y ? "equal" : "differ");
  return 0;
}
