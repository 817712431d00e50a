// libFuzzer target: the safetensors reader, single file and sharded folder. The input is one or
// more files separated by gt_fuzz::kFileSeparator:
//   * one part: the bytes of model.safetensors; read as a file (SafetensorsFile,
//     TensorStore::open_file) and as a model folder holding it (TensorStore::open_folder);
//   * several parts: a sharded folder; the first part is model.safetensors.index.json (not
//     written when empty: the folder is then read as "every *.safetensors file"), the others are
//     model-0000K-of-0000N.safetensors (K = 1..N).
// Every tensor that loads is read in full (to_floats for the float dtypes, the first and last byte
// otherwise), so a view that reaches outside its mapping is an ASan report. gt::Error is the
// expected way to fail; anything else -- a crash, a sanitizer report, another exception, a hang,
// runaway memory -- is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_files.h"
#include "gemmatune/io/safetensors.h"
#include "gemmatune/util/error.h"

namespace {

volatile uint8_t g_sink;

void touch(const gt::TensorView& v) {
  (void)v.numel();
  (void)v.shape_str();
  if (v.dtype == gt::DType::F32 || v.dtype == gt::DType::BF16 || v.dtype == gt::DType::F16 || v.dtype == gt::DType::F64) {
    auto f = v.to_floats();
    if (!f.empty()) g_sink = uint8_t(f.front() == f.back());
  } else if (v.nbytes > 0) {
    const auto* p = static_cast<const uint8_t*>(v.data);
    g_sink = uint8_t(p[0] + p[v.nbytes - 1]);
  }
}

void read_store(const gt::TensorStore& s) {
  for (const auto& name : s.names()) touch(s.get(name));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = gt_fuzz::split_files(data, size, 5);
  const std::string dir = gt_fuzz::fresh_dir("model");
  if (parts.size() == 1) {
    const std::string path = dir + "/model.safetensors";
    gt_fuzz::write_bytes(path, parts[0]);
    try {
      gt::SafetensorsFile f(path);
      for (const auto& [name, v] : f.tensors()) touch(v);
    } catch (const gt::Error&) {
    }
    try {
      read_store(gt::TensorStore::open_file(path));
    } catch (const gt::Error&) {
    }
  } else {
    const size_t n = parts.size() - 1;
    if (!parts[0].empty()) gt_fuzz::write_bytes(dir + "/model.safetensors.index.json", parts[0]);
    for (size_t k = 1; k <= n; ++k)
      gt_fuzz::write_bytes(dir + "/model-0000" + std::to_string(k) + "-of-0000" + std::to_string(n) + ".safetensors",
                           parts[k]);
  }
  try {
    read_store(gt::TensorStore::open_folder(dir));
  } catch (const gt::Error&) {
  }
  return 0;
}
