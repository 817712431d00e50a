#include "gemmatune/io/gguf.h"

#include <cstring>

#include "gemmatune/util/error.h"

namespace gt {
namespace {

// Limits that no real file comes near; they keep a lying header from asking for absurd memory.
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxKv = 1u << 20;
constexpr uint64_t kMaxString = 1ull << 30;
constexpr uint64_t kMaxArray = 1ull << 28;
constexpr uint32_t kMaxDims = 4;
constexpr int kMaxNesting = 8;

struct Block {
  GgmlType t;
  const char* name;
  int64_t values, bytes;
};
constexpr Block kBlocks[] = {
    {GgmlType::F32, "F32", 1, 4},       {GgmlType::F16, "F16", 1, 2},        {GgmlType::Q4_0, "Q4_0", 32, 18},
    {GgmlType::Q4_1, "Q4_1", 32, 20},   {GgmlType::Q5_0, "Q5_0", 32, 22},    {GgmlType::Q5_1, "Q5_1", 32, 24},
    {GgmlType::Q8_0, "Q8_0", 32, 34},   {GgmlType::Q8_1, "Q8_1", 32, 36},    {GgmlType::Q2_K, "Q2_K", 256, 84},
    {GgmlType::Q3_K, "Q3_K", 256, 110}, {GgmlType::Q4_K, "Q4_K", 256, 144},  {GgmlType::Q5_K, "Q5_K", 256, 176},
    {GgmlType::Q6_K, "Q6_K", 256, 210}, {GgmlType::Q8_K, "Q8_K", 256, 292},  {GgmlType::I8, "I8", 1, 1},
    {GgmlType::I16, "I16", 1, 2},       {GgmlType::I32, "I32", 1, 4},        {GgmlType::I64, "I64", 1, 8},
    {GgmlType::F64, "F64", 1, 8},       {GgmlType::BF16, "BF16", 1, 2},
};

const char* kValueTypes[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};

class Cursor {
 public:
  Cursor(const MappedFile& f) : p_(f.data()), n_(f.size()), path_(f.path()) {}
  uint64_t pos() const { return pos_; }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const char* what) {
    const uint64_t len = read<uint64_t>(what);
    if (len > kMaxString) fail(path_, ": ", what, " at offset ", pos_ - 8, " claims ", len, " bytes (limit ", kMaxString, ")");
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }
  void need(uint64_t bytes, const char* what) const {
    if (bytes > n_ - pos_)
      fail(path_, ": truncated: ", what, " at offset ", pos_, " needs ", bytes, " bytes, the file has ", n_ - pos_, " left");
  }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* p_;
  uint64_t n_;
  uint64_t pos_ = 0;
  std::string path_;
};

GgufValue read_value(Cursor& c, uint32_t type, const std::string& key, int depth) {
  GgufValue out;
  out.type = type;
  switch (type) {
    case 0: out.v = uint64_t(c.read<uint8_t>("a u8 value")); break;
    case 1: out.v = int64_t(c.read<int8_t>("an i8 value")); break;
    case 2: out.v = uint64_t(c.read<uint16_t>("a u16 value")); break;
    case 3: out.v = int64_t(c.read<int16_t>("an i16 value")); break;
    case 4: out.v = uint64_t(c.read<uint32_t>("a u32 value")); break;
    case 5: out.v = int64_t(c.read<int32_t>("an i32 value")); break;
    case 6: out.v = double(c.read<float>("an f32 value")); break;
    case 7: {
      const uint8_t b = c.read<uint8_t>("a bool value");
      if (b > 1) fail(c.path(), ": metadata '", key, "': bool value ", int(b), " at offset ", c.pos() - 1, " (expected 0 or 1)");
      out.v = b == 1;
      break;
    }
    case 8: out.v = c.string("a string value"); break;
    case 9: {
      if (depth >= kMaxNesting) fail(c.path(), ": metadata '", key, "': arrays nested deeper than ", kMaxNesting);
      const uint32_t et = c.read<uint32_t>("an array element type");
      if (et > 12) fail(c.path(), ": metadata '", key, "': unknown array element type ", et, " (expected 0..12)");
      const uint64_t n = c.read<uint64_t>("an array length");
      if (n > kMaxArray) fail(c.path(), ": metadata '", key, "': array of ", n, " elements (limit ", kMaxArray, ")");
      // Every element takes at least one byte: a count beyond the file is a lie, refused before allocating.
      c.need(n, "the array's elements");
      GgufArray arr;
      arr.reserve(size_t(n));
      for (uint64_t i = 0; i < n; ++i) arr.push_back(read_value(c, et, key, depth + 1));
      out.v = std::move(arr);
      break;
    }
    case 10: out.v = c.read<uint64_t>("a u64 value"); break;
    case 11: out.v = c.read<int64_t>("an i64 value"); break;
    case 12: out.v = c.read<double>("an f64 value"); break;
    default: fail(c.path(), ": metadata '", key, "': unknown value type ", type, " at offset ", c.pos() - 4, " (expected 0..12)");
  }
  return out;
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  for (const auto& b : kBlocks)
    if (b.t == t) return b.name;
  return "unknown";
}

bool ggml_type_block(uint32_t type, int64_t* values, int64_t* bytes) {
  for (const auto& b : kBlocks)
    if (uint32_t(b.t) == type) {
      *values = b.values;
      *bytes = b.bytes;
      return true;
    }
  return false;
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<int64_t> GgufTensor::shape() const { return std::vector<int64_t>(dims.rbegin(), dims.rend()); }

GgufFile::GgufFile(const std::string& path) : file_(path) {
  Cursor c(file_);
  c.need(4, "the magic");
  if (std::memcmp(file_.data(), "GGUF", 4) != 0) fail(path, ": not a GGUF file (the first 4 bytes are not \"GGUF\")");
  c.read<uint32_t>("the magic");
  version_ = c.read<uint32_t>("the version");
  if (version_ != 2 && version_ != 3) fail(path, ": GGUF version ", version_, " (expected 2 or 3)");
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  if (n_tensors > kMaxTensors) fail(path, ": claims ", n_tensors, " tensors (limit ", kMaxTensors, ")");
  if (n_kv > kMaxKv) fail(path, ": claims ", n_kv, " metadata entries (limit ", kMaxKv, ")");
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.string("a metadata key");
    const uint32_t type = c.read<uint32_t>("a metadata value type");
    GgufValue v = read_value(c, type, key, 0);
    if (!kv_.emplace(key, std::move(v)).second) fail(path, ": metadata key '", key, "' appears twice");
  }
  uint64_t alignment = 32;
  if (has("general.alignment")) {
    const int64_t a = get_int("general.alignment");
    if (a <= 0 || a > (1 << 20) || (a & (a - 1)) != 0) fail(path, ": general.alignment ", a, " (expected a power of two)");
    alignment = uint64_t(a);
  }
  struct Raw {
    uint64_t offset;
    uint64_t nbytes;
  };
  std::vector<Raw> raw;
  tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = c.string("a tensor name");
    const uint32_t nd = c.read<uint32_t>("a tensor's dimension count");
    if (nd == 0 || nd > kMaxDims) fail(path, ": tensor '", t.name, "' has ", nd, " dimensions (expected 1..", kMaxDims, ")");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t dim = c.read<uint64_t>("a tensor dimension");
      if (dim == 0 || dim > (1ull << 40) || numel > (1ull << 48) / dim)
        fail(path, ": tensor '", t.name, "' dimension ", d, " is ", dim, " (the element count must be in 1..2^48)");
      numel *= dim;
      t.dims.push_back(int64_t(dim));
    }
    const uint32_t type = c.read<uint32_t>("a tensor type");
    int64_t bv = 0, bb = 0;
    if (!ggml_type_block(type, &bv, &bb)) fail(path, ": tensor '", t.name, "' has ggml type ", type, ", which this reader does not know");
    t.type = GgmlType(type);
    if (uint64_t(t.dims[0]) % uint64_t(bv) != 0)
      fail(path, ": tensor '", t.name, "' (", ggml_type_name(t.type), "): a row of ", t.dims[0], " values is not a whole number of blocks of ", bv);
    t.nbytes = numel / uint64_t(bv) * uint64_t(bb);
    const uint64_t off = c.read<uint64_t>("a tensor offset");
    if (off % alignment != 0) fail(path, ": tensor '", t.name, "' offset ", off, " is not a multiple of the alignment ", alignment);
    raw.push_back({off, t.nbytes});
    if (!by_name_.emplace(t.name, tensors_.size()).second) fail(path, ": tensor '", t.name, "' appears twice");
    tensors_.push_back(std::move(t));
  }
  const uint64_t data_start = (c.pos() + alignment - 1) / alignment * alignment;
  const uint64_t size = file_.size();
  if (data_start > size && !tensors_.empty()) fail(path, ": truncated: the data section would start at ", data_start, ", past the end (", size, " bytes)");
  // Every tensor inside the file, and no two overlapping.
  std::map<uint64_t, size_t> starts;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensor& t = tensors_[i];
    const uint64_t avail = size - data_start;
    if (raw[i].offset > avail || raw[i].nbytes > avail - raw[i].offset)
      fail(path, ": truncated: tensor '", t.name, "' (", ggml_type_name(t.type), ", ", raw[i].nbytes, " bytes at data offset ",
           raw[i].offset, ") runs past the end of the file (", avail, " data bytes)");
    t.offset = data_start + raw[i].offset;
    t.data = file_.data() + t.offset;
    auto [it, fresh] = starts.emplace(raw[i].offset, i);
    if (!fresh) fail(path, ": tensors '", tensors_[it->second].name, "' and '", t.name, "' start at the same offset");
  }
  uint64_t end = 0;
  const GgufTensor* prev = nullptr;
  for (const auto& [off, i] : starts) {
    if (prev && off < end) fail(path, ": tensors '", prev->name, "' and '", tensors_[i].name, "' overlap");
    end = off + raw[i].nbytes;
    prev = &tensors_[i];
  }
}

const GgufTensor* GgufFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

namespace {
const GgufValue& lookup(const std::map<std::string, GgufValue>& kv, const std::string& path, const std::string& key) {
  auto it = kv.find(key);
  if (it == kv.end()) fail(path, ": metadata key '", key, "' is missing");
  return it->second;
}
[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v, const char* want) {
  fail(path, ": metadata '", key, "' is ", v.type <= 12 ? kValueTypes[v.type] : "?", ", expected ", want);
}
}  // namespace

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = lookup(kv_, path(), key);
  if (auto* s = std::get_if<std::string>(&v.v)) return *s;
  wrong_type(path(), key, v, "a string");
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = lookup(kv_, path(), key);
  if (auto* i = std::get_if<int64_t>(&v.v)) return *i;
  if (auto* u = std::get_if<uint64_t>(&v.v)) {
    if (*u > uint64_t(INT64_MAX)) fail(path(), ": metadata '", key, "' = ", *u, " does not fit in int64");
    return int64_t(*u);
  }
  wrong_type(path(), key, v, "an integer");
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = lookup(kv_, path(), key);
  if (auto* d = std::get_if<double>(&v.v)) return *d;
  if (auto* i = std::get_if<int64_t>(&v.v)) return double(*i);
  if (auto* u = std::get_if<uint64_t>(&v.v)) return double(*u);
  wrong_type(path(), key, v, "a number");
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = lookup(kv_, path(), key);
  if (auto* b = std::get_if<bool>(&v.v)) return *b;
  wrong_type(path(), key, v, "a bool");
}

const GgufArray& GgufFile::get_array(const std::string& key) const {
  const GgufValue& v = lookup(kv_, path(), key);
  if (auto* a = std::get_if<GgufArray>(&v.v)) return *a;
  wrong_type(path(), key, v, "an array");
}

}  // namespace gt
