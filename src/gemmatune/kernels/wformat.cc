// The weight storage formats' names and row sizes (kernels/linear.h): plain functions, apart from
// the quantized kernels in linear_quant.cc, so that code reading model folders (and the fuzz
// targets, built without the kernels) can size and name quantized rows.
#include "gemmatune/kernels/linear.h"

namespace gt {

const char* wformat_name(WFormat f) {
  switch (f) {
    case WFormat::Dense: return "dense";
    case WFormat::Q8_0: return "q8_0";
    case WFormat::Q4_0: return "q4_0";
    case WFormat::Q4_K: return "q4_k";
  }
  return "?";
}

int64_t wformat_block_values(WFormat f) {
  switch (f) {
    case WFormat::Q8_0:
    case WFormat::Q4_0: return 32;
    case WFormat::Q4_K: return 256;
    default: return 1;
  }
}

size_t wformat_row_bytes(WFormat f, DType dt, int64_t k) {
  switch (f) {
    case WFormat::Q8_0: return size_t(k / 32) * 34;
    case WFormat::Q4_0: return size_t(k / 32) * 18;
    case WFormat::Q4_K: return size_t(k / 256) * 144;
    default: return size_t(k) * dtype_size(dt);
  }
}

}  // namespace gt
