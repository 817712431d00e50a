#include "gemmatune/lora/merge.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Rows [row0, row0 + n) of expert e of (base ? W : 0) + s * delta, as floats into out[n, in].
void merged_rows(const LoraModule& mod, const void* base, DType dt, double s, int64_t e, int64_t row0, int64_t n,
                 float* out) {
  const int64_t in = mod.in, r = mod.r, E = mod.experts;
  const size_t esz = dtype_size(dt);
  // Threads only pay off on real checkpoints; tiny tensors stay on the calling thread.
  const bool big = n * in * (r + 1) >= (int64_t(1) << 20);
#pragma omp parallel if (big)
  {
    std::vector<double> acc(static_cast<size_t>(in));
    std::vector<float> w(static_cast<size_t>(in));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t o = row0 + i;
      if (base) {
        to_f32(dt, static_cast<const uint8_t*>(base) + size_t((e * mod.out + o) * in) * esz, w.data(), size_t(in));
        for (int64_t k = 0; k < in; ++k) acc[size_t(k)] = w[size_t(k)];
      } else {
        std::fill(acc.begin(), acc.end(), 0.0);
      }
      for (int64_t rr = 0; rr < r; ++rr) {
        // B.reshape(out, r, E)[o, rr, e] and A.reshape(E, r, in)[e, rr, :]; E = 1 gives the Linear layout.
        const double b = double(mod.B[size_t(o * r * E + rr * E + e)]) * s;
        if (b == 0.0) continue;
        const float* arow = mod.A.data() + size_t((e * r + rr) * in);
        for (int64_t k = 0; k < in; ++k) acc[size_t(k)] += b * double(arow[k]);
      }
      float* dst = out + size_t(i * in);
      for (int64_t k = 0; k < in; ++k) dst[k] = float(acc[size_t(k)]);
    }
  }
}

void check_module(const LoraModule& mod) {
  if (int64_t(mod.A.size()) != mod.r * mod.experts * mod.in || int64_t(mod.B.size()) != mod.out * mod.r * mod.experts)
    fail("LoRA module ", mod.target, ": A/B hold ", mod.A.size(), "/", mod.B.size(), " values, expected ",
         mod.r * mod.experts * mod.in, "/", mod.out * mod.r * mod.experts);
}

const LoraTarget& target_of(const std::vector<LoraTarget>& targets, const Model& m, const LoraModule& mod) {
  for (const auto& t : targets)
    if (t.layer == mod.layer && t.proj == mod.proj) {
      if (t.in != mod.in || t.out != mod.out || t.experts != mod.experts)
        fail("LoRA module ", mod.target, " is [", mod.experts, " x ", mod.out, " x ", mod.in, "] but ", t.weight_key,
             " of ", m.dir(), " is [", t.experts, " x ", t.out, " x ", t.in, "]");
      return t;
    }
  fail("LoRA module ", mod.target, " (layer ", mod.layer, ", ", proj_name(mod.proj), ") has no adaptable weight in ", m.dir());
}

std::string strip_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

bool is_weight_file(const std::string& name) {
  for (const char* ext : {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt", ".onnx"}) {
    const size_t n = std::strlen(ext);
    if (name.size() >= n && name.compare(name.size() - n, n, ext) == 0) return true;
  }
  return false;
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void convert_from_f32(const float* src, DType dt, size_t n, std::vector<uint8_t>& dst) {
  dst.resize(n * dtype_size(dt));
  if (dt == DType::F32) {
    std::memcpy(dst.data(), src, n * 4);
  } else if (dt == DType::BF16) {
    auto* d = reinterpret_cast<uint16_t*>(dst.data());
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
  } else if (dt == DType::F16) {
    auto* d = reinterpret_cast<uint16_t*>(dst.data());
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
  } else {
    fail("merge: cannot store merged weights as ", dtype_name(dt));
  }
}

}  // namespace

std::vector<float> lora_delta(const LoraModule& mod, double scale) {
  check_module(mod);
  std::vector<float> out(size_t(mod.experts * mod.out * mod.in));
  for (int64_t e = 0; e < mod.experts; ++e)
    merged_rows(mod, nullptr, DType::F32, double(mod.scaling) * scale, e, 0, mod.out,
                out.data() + size_t(e * mod.out * mod.in));
  return out;
}

std::vector<float> merged_weight(const Model& m, const LoraModule& mod, double scale) {
  check_module(mod);
  const std::vector<LoraTarget> targets = adaptable_targets(m);
  const LoraTarget& t = target_of(targets, m, mod);
  std::vector<float> out(size_t(mod.experts * mod.out * mod.in));
  for (int64_t e = 0; e < mod.experts; ++e)
    merged_rows(mod, t.data, t.dtype, double(mod.scaling) * scale, e, 0, mod.out,
                out.data() + size_t(e * mod.out * mod.in));
  return out;
}

namespace {

// Refuses an output folder that is (or contains) the model folder, or a non-empty one without --force.
void check_out_dir(const Model& m, const std::string& out_dir, bool overwrite) {
  if (out_dir.empty()) fail("merge: the output folder name is empty");
  if (!is_directory(m.dir()))
    fail("merge: the base model ", m.dir(), " is not a Hugging Face folder (a GGUF file cannot be merged into; "
         "apply the adapter unmerged with --adapter, or merge into the Hugging Face folder it was converted from: "
         "the adapter's keys are Hugging Face names)");
  std::error_code ec;
  const fs::path model_abs = fs::weakly_canonical(fs::path(m.dir()), ec);
  const fs::path out_abs = fs::weakly_canonical(fs::path(out_dir), ec);
  if (fs::exists(out_dir)) {
    if (fs::equivalent(out_dir, m.dir(), ec) || out_abs == model_abs)
      fail("merge: output folder ", out_dir, " is the model folder itself; write the merged model to a new folder");
    if (!fs::is_directory(out_dir)) fail("merge: ", out_dir, " exists and is not a directory");
    if (!fs::is_empty(out_dir) && !overwrite)
      fail("merge: output folder ", out_dir, " exists and is not empty (pass --force to replace it)");
  }
  const std::string ms = model_abs.string(), os = out_abs.string();
  if (ms == os) fail("merge: output folder ", out_dir, " is the model folder itself; write the merged model to a new folder");
  if (ms.size() > os.size() && ms.compare(0, os.size(), os) == 0 && ms[os.size()] == '/')
    fail("merge: output folder ", out_dir, " contains the model folder ", m.dir(), "; choose another folder");
}

struct Job {
  const LoraTarget* t;
  const LoraModule* mod;
};

// Which checkpoint tensors change (by key).
std::map<std::string, Job> merge_jobs(const Model& m, const Adapter& a, const std::vector<LoraTarget>& targets) {
  std::map<std::string, Job> jobs;
  for (const auto& mod : a.modules) {
    check_module(mod);
    const LoraTarget& t = target_of(targets, m, mod);
    if (!jobs.emplace(t.weight_key, Job{&t, &mod}).second)
      fail("merge: the adapter adapts ", t.weight_key, " twice");
  }
  return jobs;
}

// Each job's tensor is stored with the shape the model expects.
void check_jobs(const std::map<std::string, Job>& jobs, const TensorStore& store) {
  for (const auto& [key, job] : jobs) {
    const TensorView* v = store.find(key);
    if (!v) fail("merge: ", store.where(), " has no tensor '", key, "' for ", job.mod->target);
    const std::vector<int64_t> want = job.t->kind == LoraKind::Experts
                                          ? std::vector<int64_t>{job.t->experts, job.t->out, job.t->in}
                                          : std::vector<int64_t>{job.t->out, job.t->in};
    if (v->shape != want) fail("merge: ", v->file, ": tensor '", key, "' has shape ", v->shape_str(), ", the model expects another");
  }
}

// Writes one safetensors file of the merged checkpoint into `tmp`: the same tensors in the same
// order, adapted ones merged (in row blocks, converted back to the stored dtype), others copied.
void write_merged_file(const std::string& file, const std::string& tmp, const std::map<std::string, Job>& jobs,
                       double scale, MergeSummary& sum, int64_t& done, const std::function<void(const std::string&)>& say) {
  const int64_t total = int64_t(jobs.size());
  SafetensorsFile sf(file);
  std::vector<const TensorView*> order;
  for (const auto& [n, v] : sf.tensors()) order.push_back(&v);
  std::sort(order.begin(), order.end(), [](const TensorView* x, const TensorView* y) {
    return static_cast<const uint8_t*>(x->data) < static_cast<const uint8_t*>(y->data);
  });
  json header = json::object();
  if (!sf.metadata().empty()) header["__metadata__"] = sf.metadata();
  uint64_t off = 0;
  int64_t n_adapted = 0;
  for (const TensorView* v : order) {
    header[v->name] = {{"dtype", dtype_name(v->dtype)}, {"shape", v->shape}, {"data_offsets", {off, off + v->nbytes}}};
    off += v->nbytes;
    n_adapted += int64_t(jobs.count(v->name));
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');
  const std::string base = fs::path(file).filename().string();
  say("writing " + base + " (" + std::to_string(order.size()) + " tensors, " + std::to_string(n_adapted) + " adapted)");
  const std::string dst = tmp + "/" + base;
  write_file_atomic(dst, [&](std::FILE* f) {
    const uint64_t hl = h.size();
    if (std::fwrite(&hl, 8, 1, f) != 1 || std::fwrite(h.data(), 1, h.size(), f) != h.size())
      fail("merge: error writing ", dst);
    std::vector<float> rows;
    std::vector<uint8_t> bytes;
    for (const TensorView* v : order) {
      auto it = jobs.find(v->name);
      if (it == jobs.end()) {
        if (v->nbytes && std::fwrite(v->data, 1, v->nbytes, f) != v->nbytes) fail("merge: error writing ", dst);
        ++sum.tensors_copied;
        continue;
      }
      const LoraModule& mod = *it->second.mod;
      const int64_t block = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(1, mod.in));
      for (int64_t e = 0; e < mod.experts; ++e)
        for (int64_t r0 = 0; r0 < mod.out; r0 += block) {
          const int64_t n = std::min(block, mod.out - r0);
          rows.resize(size_t(n * mod.in));
          merged_rows(mod, v->data, v->dtype, double(mod.scaling) * scale, e, r0, n, rows.data());
          convert_from_f32(rows.data(), v->dtype, rows.size(), bytes);
          if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) fail("merge: error writing ", dst);
        }
      ++sum.tensors_merged;
      ++done;
      if (total >= 10 && done % std::max<int64_t>(1, total / 10) == 0 && done < total)
        say("merged " + std::to_string(done) + "/" + std::to_string(total) + " adapted tensors");
    }
  });
  sum.bytes += 8 + h.size() + off;
}

// The rest of the model folder (config, generation config, tokenizer, chat template, index, ...).
void copy_other_files(const Model& m, const std::set<std::string>& rewritten_files, const std::string& tmp,
                      MergeSummary& sum, const std::function<void(const std::string&)>& say) {
  for (const auto& entry : fs::directory_iterator(m.dir())) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    bool rewritten = false;
    for (const auto& f : rewritten_files) rewritten = rewritten || fs::path(f).filename().string() == name;
    if (rewritten) continue;
    if (is_weight_file(name)) {
      say("not copying " + name + " (a weight file the merged checkpoint does not use)");
      continue;
    }
    write_file_atomic(tmp + "/" + name, read_file(entry.path().string()));
    ++sum.files_copied;
  }
}

// Moves the finished temporary folder into place (replacing an existing output folder safely).
void publish(const std::string& tmp, const std::string& out_dir, const fs::path& parent) {
  std::error_code ec;
  fsync_dir(tmp);
  if (fs::exists(out_dir)) {
    const std::string old = out_dir + ".old-" + std::to_string(::getpid());
    fs::rename(out_dir, old, ec);
    if (ec) {
      fs::remove_all(tmp, ec);
      fail("merge: cannot move the existing ", out_dir, " aside: ", ec.message());
    }
    fs::rename(tmp, out_dir, ec);
    if (ec) {
      std::error_code ec2;
      fs::rename(old, out_dir, ec2);
      fail("merge: cannot rename ", tmp, " to ", out_dir, ": ", ec.message());
    }
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp, out_dir, ec);
    if (ec) fail("merge: cannot rename ", tmp, " to ", out_dir, ": ", ec.message());
  }
  fsync_dir(parent.empty() ? "." : parent.string());
}

}  // namespace

MergeSummary merge_adapter(const Model& m, const Adapter& a, const std::string& out_dir_in, double scale,
                           bool overwrite, const std::function<void(const std::string&)>& progress) {
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  const std::string out_dir = strip_slashes(out_dir_in);
  check_out_dir(m, out_dir, overwrite);
  const std::vector<LoraTarget> targets = adaptable_targets(m);
  const std::map<std::string, Job> jobs = merge_jobs(m, a, targets);
  TensorStore store = TensorStore::open_folder(m.dir());
  std::set<std::string> files;
  for (const auto& n : store.names()) files.insert(store.get(n).file);
  check_jobs(jobs, store);

  std::error_code ec;
  const fs::path parent = fs::path(out_dir).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  const std::string tmp = out_dir + ".partial-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) fail("merge: cannot create ", tmp, ": ", ec.message());

  MergeSummary sum;
  sum.modules = int64_t(a.modules.size());
  try {
    int64_t done = 0;
    for (const auto& file : files) write_merged_file(file, tmp, jobs, scale, sum, done, say);
    copy_other_files(m, files, tmp, sum, say);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  publish(tmp, out_dir, parent);
  return sum;
}

}  // namespace gt
