// safetensors: memory-mapped reading (single file or sharded folder) and atomic writing.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gemmatune/tensor/dtype.h"
#include "gemmatune/util/fs.h"

namespace gt {

// A view of one stored tensor; `data` points into a mapping owned by the reader.
struct TensorView {
  std::string name;
  std::string file;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  std::string shape_str() const;
  // Copies the tensor into floats (for small tensors: norms, scalars). Big weights stay mapped.
  std::vector<float> to_floats() const;
};

// One .safetensors file, validated on open: header length, JSON, dtypes, shapes vs byte ranges.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model folder: model.safetensors, or the shards named by
// model.safetensors.index.json, or every *.safetensors file when neither exists.
class TensorStore {
 public:
  static TensorStore open_folder(const std::string& dir);
  static TensorStore open_file(const std::string& path);
  // A store over views whose bytes live elsewhere (a GGUF mapping, converted buffers): `keep`
  // holds that memory alive as long as any copy of the store. `where` names it in messages.
  static TensorStore from_views(const std::string& where, std::vector<TensorView> views, std::shared_ptr<const void> keep);

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorView* find(const std::string& name) const;
  const TensorView& get(const std::string& name) const;  // throws naming the tensor and folder
  std::vector<std::string> names() const;
  const std::string& where() const { return where_; }

 private:
  std::string where_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::shared_ptr<const std::vector<TensorView>> views_;  // from_views
  std::shared_ptr<const void> keep_;
  std::map<std::string, const TensorView*> index_;
};

// A tensor to write: data is `nbytes` of `dtype` in row-major order.
struct TensorOut {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

TensorOut tensor_out_f32(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v);
TensorOut tensor_out_i32(const std::string& name, std::vector<int64_t> shape, const std::vector<int32_t>& v);

// Writes a safetensors file atomically (temp + fsync + rename).
void write_safetensors(const std::string& path, const std::vector<TensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace gt
