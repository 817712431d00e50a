#include "gemmatune/io/safetensors.h"

#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "gemmatune/util/error.h"

namespace gt {

using json = nlohmann::json;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string TensorView::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::vector<float> TensorView::to_floats() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  to_f32(dtype, data, out.data(), out.size());
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const size_t size = file_.size();
  if (size < 8) fail(path, ": not a safetensors file (", size, " bytes, need at least an 8-byte header length)");
  uint64_t hlen;
  std::memcpy(&hlen, file_.data(), 8);
  if (hlen > size - 8 || hlen > (uint64_t(100) << 20))
    fail(path, ": safetensors header length ", hlen, " does not fit in a file of ", size,
         " bytes (truncated or not a safetensors file)");
  json header;
  try {
    header = json::parse(file_.data() + 8, file_.data() + 8 + hlen);
  } catch (const std::exception& e) {
    fail(path, ": safetensors header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) fail(path, ": safetensors header is not a JSON object");
  const uint8_t* base = file_.data() + 8 + hlen;
  const size_t data_size = size - 8 - hlen;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_object())
        for (auto m = it->begin(); m != it->end(); ++m)
          if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
      continue;
    }
    const std::string& name = it.key();
    const json& t = *it;
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets"))
      fail(path, ": tensor '", name, "' header entry lacks dtype/shape/data_offsets");
    TensorView v;
    v.name = name;
    v.file = path;
    std::string dt = t["dtype"].is_string() ? t["dtype"].get<std::string>() : "?";
    if (!dtype_from_name(dt, &v.dtype)) fail(path, ": tensor '", name, "' has unsupported dtype ", dt);
    if (!t["shape"].is_array()) fail(path, ": tensor '", name, "' shape is not a list");
    for (const auto& d : t["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(path, ": tensor '", name, "' has an invalid shape");
      v.shape.push_back(d.get<int64_t>());
    }
    const json& off = t["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(path, ": tensor '", name, "' data_offsets must be two non-negative integers");
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size)
      fail(path, ": tensor '", name, "' data_offsets [", b, ", ", e, ") exceed the ", data_size,
           " data bytes of the file (truncated?)");
    v.nbytes = size_t(e - b);
    uint64_t want = uint64_t(v.numel()) * dtype_size(v.dtype);
    if (want != v.nbytes)
      fail(path, ": tensor '", name, "' of shape ", v.shape_str(), " and dtype ", dt, " needs ", want,
           " bytes but its data_offsets span ", v.nbytes);
    v.data = base + b;
    tensors_.emplace(name, std::move(v));
  }
}

static std::vector<std::string> list_safetensors(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

TensorStore TensorStore::open_file(const std::string& path) {
  TensorStore s;
  s.where_ = path;
  auto f = std::make_shared<SafetensorsFile>(path);
  for (const auto& [name, view] : f->tensors()) s.index_[name] = &view;
  s.files_.push_back(std::move(f));
  return s;
}

TensorStore TensorStore::open_folder(const std::string& dir) {
  TensorStore s;
  s.where_ = dir;
  if (!is_directory(dir)) fail("model folder ", dir, " does not exist or is not a directory");
  std::vector<std::string> shards;
  std::map<std::string, std::string> weight_map;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (file_exists(dir + "/model.safetensors")) {
    shards.push_back("model.safetensors");
  } else if (file_exists(index_path)) {
    json idx;
    try {
      idx = json::parse(read_file(index_path));
    } catch (const nlohmann::json::exception& e) {
      fail(index_path, ": not valid JSON: ", e.what());
    }
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
      fail(index_path, ": missing the \"weight_map\" object");
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(index_path, ": weight_map entry for '", it.key(), "' is not a file name");
      weight_map[it.key()] = it->get<std::string>();
      if (std::find(shards.begin(), shards.end(), it->get<std::string>()) == shards.end())
        shards.push_back(it->get<std::string>());
    }
  } else {
    shards = list_safetensors(dir);
  }
  if (shards.empty()) fail("model folder ", dir, " has no model.safetensors, no model.safetensors.index.json and no *.safetensors file");
  for (const auto& shard : shards) {
    std::string p = dir + "/" + shard;
    if (!file_exists(p)) fail(index_path, " names shard ", shard, " but ", p, " does not exist");
    auto f = std::make_shared<SafetensorsFile>(p);
    for (const auto& [name, view] : f->tensors()) {
      auto wm = weight_map.find(name);
      if (!weight_map.empty() && wm != weight_map.end() && wm->second != shard) continue;
      if (s.index_.count(name)) fail(p, ": tensor '", name, "' also appears in ", s.index_[name]->file);
      s.index_[name] = &view;
    }
    s.files_.push_back(std::move(f));
  }
  for (const auto& [name, shard] : weight_map)
    if (!s.index_.count(name)) fail(index_path, " maps tensor '", name, "' to ", shard, " but that file does not contain it");
  return s;
}

const TensorView* TensorStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& TensorStore::get(const std::string& name) const {
  const TensorView* v = find(name);
  if (!v) fail(where_, ": missing tensor '", name, "'");
  return *v;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

TensorOut tensor_out_f32(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
  return TensorOut{name, DType::F32, std::move(shape), v.data(), v.size() * 4};
}

TensorOut tensor_out_i32(const std::string& name, std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  return TensorOut{name, DType::I32, std::move(shape), v.data(), v.size() * 4};
}

void write_safetensors(const std::string& path, const std::vector<TensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    if (uint64_t(n) * dtype_size(t.dtype) != t.nbytes)
      fail("write_safetensors ", path, ": tensor '", t.name, "' has ", t.nbytes, " bytes, shape needs ",
           uint64_t(n) * dtype_size(t.dtype));
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + t.nbytes}}};
    off += t.nbytes;
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');
  write_file_atomic(path, [&](std::FILE* f) {
    uint64_t hl = h.size();
    bool ok = std::fwrite(&hl, 8, 1, f) == 1 && std::fwrite(h.data(), 1, h.size(), f) == h.size();
    for (const auto& t : tensors)
      if (ok && t.nbytes) ok = std::fwrite(t.data, 1, t.nbytes, f) == t.nbytes;
    if (!ok) fail("error writing ", path);
  });
}

}  // namespace gt
