// GGUF (llama.cpp's model file, versions 2 and 3): the container, memory-mapped and validated on
// open. Metadata values, tensor infos (name, ggml type, dims, data range) and views of the data.
// Every malformed, truncated or lying file is refused with the file, the offset or the tensor, and
// what was expected; nothing is read outside the mapping and no size is trusted before it is checked.
//
// Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata (key string,
// u32 type, value), the tensor infos (name, u32 n_dims, u64 dims[n_dims] innermost first, u32 ggml
// type, u64 offset into the data section), padding to `general.alignment` (default 32), the data.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "gemmatune/util/fs.h"

namespace gt {

// ggml tensor types this reader knows the block sizes of (values as in ggml.h).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, I8 = 24, I16 = 25, I32 = 26,
  I64 = 27, F64 = 28, BF16 = 30,
};
const char* ggml_type_name(GgmlType t);
// Values per block and bytes per block; false for a type this reader does not know.
bool ggml_type_block(uint32_t type, int64_t* values, int64_t* bytes);

struct GgufValue;
using GgufArray = std::vector<GgufValue>;
struct GgufValue {
  // u8..u64 and bools are kept as integers; f32/f64 as double; strings; arrays.
  std::variant<int64_t, uint64_t, double, bool, std::string, GgufArray> v;
  uint32_t type = 0;  // the GGUF value type as stored (0 = u8 ... 12 = f64)
};

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the innermost (contiguous) one
  const uint8_t* data = nullptr;
  uint64_t offset = 0;  // within the file
  uint64_t nbytes = 0;
  int64_t numel() const;
  // The row-major shape as safetensors/PyTorch write it: dims reversed.
  std::vector<int64_t> shape() const;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  const std::string& path() const { return file_.path(); }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find(const std::string& name) const;

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  // Typed getters: fail naming the file and key when absent or of another type.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;  // any integer type that fits in int64
  double get_float(const std::string& key) const;  // f32/f64 (and integers)
  bool get_bool(const std::string& key) const;
  const GgufArray& get_array(const std::string& key) const;

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> by_name_;
};

}  // namespace gt
