#include "gemmatune/io/safetensors.h"

#include <dirent.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <nlohmann/json.hpp>

#include "gemmatune/util/error.h"
#include "gemmatune/util/json.h"

namespace gt {

using json = nlohmann::json;

int64_t TensorView::numel() const {
  // Shapes are validated on load (the product fits in int64); unsigned arithmetic keeps a
  // hand-made view from being undefined behaviour.
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);
  return int64_t(n);
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
  const json header = parse_json_file(
      std::string_view(reinterpret_cast<const char*>(file_.data()) + 8, size_t(hlen)), path + ": safetensors header");
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
    // The element count and byte size are computed with overflow checks: a shape whose product wraps
    // around could otherwise match a small (or empty) byte range.
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : t["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        fail(path, ": tensor '", name, "' has an invalid shape ", t["shape"].dump(), " (expected non-negative integers)");
      v.shape.push_back(d.get<int64_t>());
      // Every partial product must fit in int64 too: code multiplies leading dimensions in int64.
      overflow = overflow || __builtin_mul_overflow(numel, uint64_t(v.shape.back()), &numel) || numel > uint64_t(INT64_MAX);
    }
    uint64_t want = 0;
    if (overflow || __builtin_mul_overflow(numel, uint64_t(dtype_size(v.dtype)), &want))
      fail(path, ": tensor '", name, "' has shape ", v.shape_str(), ", whose size overflows 64 bits");
    const json& off = t["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(path, ": tensor '", name, "' data_offsets must be two non-negative integers");
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size)
      fail(path, ": tensor '", name, "' data_offsets [", b, ", ", e, ") exceed the ", data_size,
           " data bytes of the file (truncated?)");
    v.nbytes = size_t(e - b);
    if (want != v.nbytes)
      fail(path, ": tensor '", name, "' of shape ", v.shape_str(), " and dtype ", dt, " needs ", want,
           " bytes but its data_offsets span ", v.nbytes);
    v.data = base + b;
    tensors_.emplace(name, std::move(v));
  }
  // Tensors must not share bytes (the safetensors format stores each one once; writers never overlap).
  std::vector<const TensorView*> by_offset;
  for (const auto& [name, v] : tensors_)
    if (v.nbytes) by_offset.push_back(&v);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorView* x, const TensorView* y) { return x->data < y->data; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorView& p = *by_offset[i - 1];
    const TensorView& q = *by_offset[i];
    if (static_cast<const uint8_t*>(p.data) + p.nbytes > q.data)
      fail(path, ": tensors '", p.name, "' and '", q.name, "' overlap (data_offsets [",
           static_cast<const uint8_t*>(p.data) - base, ", ", static_cast<const uint8_t*>(p.data) - base + p.nbytes,
           ") and [", static_cast<const uint8_t*>(q.data) - base, ", ",
           static_cast<const uint8_t*>(q.data) - base + q.nbytes, "))");
  }
}

// A relative path that stays inside its folder: not empty, not absolute, no "." or ".." component,
// no NUL byte.
static bool is_relative_inside(const std::string& f) {
  if (f.empty() || f[0] == '/' || f.find('\0') != std::string::npos) return false;
  size_t b = 0;
  while (b <= f.size()) {
    size_t e = f.find('/', b);
    if (e == std::string::npos) e = f.size();
    const std::string_view part(f.data() + b, e - b);
    if (part.empty() || part == "." || part == "..") return false;
    b = e + 1;
  }
  return true;
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

TensorStore TensorStore::from_views(const std::string& where, std::vector<TensorView> views,
                                    std::shared_ptr<const void> keep) {
  TensorStore s;
  s.where_ = where;
  auto v = std::make_shared<const std::vector<TensorView>>(std::move(views));
  for (const TensorView& t : *v)
    if (!s.index_.emplace(t.name, &t).second) fail(where, ": tensor '", t.name, "' appears twice");
  s.views_ = std::move(v);
  s.keep_ = std::move(keep);
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
    const json idx = parse_json_file(read_file(index_path), index_path);
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
      fail(index_path, ": missing the \"weight_map\" object");
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(index_path, ": weight_map entry for '", it.key(), "' is not a file name");
      // Shards live in the model folder: an absolute path or a ".." could reach any file on the machine.
      const std::string& f = it->get_ref<const std::string&>();
      if (!is_relative_inside(f))
        fail(index_path, ": weight_map maps tensor '", it.key(), "' to \"", f,
             "\", which is not a file name inside the model folder");
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
