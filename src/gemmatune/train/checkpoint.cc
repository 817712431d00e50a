#include "gemmatune/train/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

namespace {

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    for (const auto& n : list_dir(path)) remove_tree(path + "/" + n);
    ::rmdir(path.c_str());
  } else {
    ::unlink(path.c_str());
  }
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void make_dir(const std::string& d) {
  if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) fail("cannot create folder ", d, ": ", std::strerror(errno));
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", (long long)step);
  return buf;
}

bool is_step_dir(const std::string& n) { return n.size() == 13 && n.compare(0, 5, "step-") == 0; }

}  // namespace

std::string model_fingerprint(const Model& m) {
  std::string s = m.config().architecture;
  const auto& w = m.weights();
  auto add = [&](const Weight2D& x) {
    if (!x.empty()) s += "|" + x.name + ":" + std::to_string(x.n) + "x" + std::to_string(x.k) + ":" + dtype_name(x.dtype);
  };
  add(w.embed);
  for (const auto& l : w.layers)
    for (const Weight2D* x : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) add(*x);
  // FNV-1a, printed in hex: short and stable.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

void save_checkpoint(const std::string& out_dir, const Model& m, const Adapter& a, AdamW& opt, const TrainerState& st,
                     int64_t keep_last) {
  const std::string root = out_dir + "/checkpoints";
  make_dir(out_dir);
  make_dir(root);
  const std::string final_dir = root + "/" + step_name(st.step);
  const std::string tmp = root + "/.tmp-" + step_name(st.step) + "-" + std::to_string(::getpid());
  remove_tree(tmp);
  make_dir(tmp);
  a.save_peft(tmp, m.dir());
  std::vector<TensorOut> ts;
  for (size_t i = 0; i < opt.m().size(); ++i) {
    ts.push_back(tensor_out_f32("m." + std::to_string(i), {int64_t(opt.m()[i].size())}, opt.m()[i]));
    ts.push_back(tensor_out_f32("v." + std::to_string(i), {int64_t(opt.v()[i].size())}, opt.v()[i]));
  }
  write_safetensors(tmp + "/optimizer.safetensors", ts);
  nlohmann::json j = {{"step", st.step},
                      {"optimizer_steps", opt.steps()},
                      {"data_cursor", st.data_cursor},
                      {"options", st.options},
                      {"model_fingerprint", st.model_fingerprint},
                      {"tokens_seen", st.tokens_seen},
                      {"extra", st.extra},
                      {"complete", true}};
  // trainer_state.json is written last: a folder without it is not a checkpoint.
  write_file_atomic(tmp + "/trainer_state.json", j.dump(2) + "\n");
  fsync_dir(tmp);
  remove_tree(final_dir);
  if (std::rename(tmp.c_str(), final_dir.c_str()) != 0) fail("cannot move checkpoint ", tmp, " to ", final_dir, ": ", std::strerror(errno));
  fsync_dir(root);
  // Keep the newest keep_last; drop leftovers of interrupted writes.
  std::vector<std::string> steps;
  for (const auto& n : list_dir(root)) {
    if (is_step_dir(n)) steps.push_back(n);
    else if (n.compare(0, 5, ".tmp-") == 0) remove_tree(root + "/" + n);
  }
  if (keep_last > 0)
    for (size_t i = 0; i + size_t(keep_last) < steps.size(); ++i) remove_tree(root + "/" + steps[i]);
}

std::string latest_checkpoint(const std::string& out_dir) {
  const std::string root = out_dir + "/checkpoints";
  auto names = list_dir(root);
  for (auto it = names.rbegin(); it != names.rend(); ++it)
    if (is_step_dir(*it) && file_exists(root + "/" + *it + "/trainer_state.json")) return root + "/" + *it;
  return "";
}

void load_checkpoint(const std::string& dir, const Model& m, Adapter& a, AdamW& opt, TrainerState& st) {
  const std::string sp = dir + "/trainer_state.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(sp));
  } catch (const nlohmann::json::exception& e) {
    fail(sp, ": corrupt checkpoint state (not valid JSON: ", e.what(), ")");
  }
  if (!j.value("complete", false)) fail(sp, ": incomplete checkpoint");
  st.step = j.at("step").get<int64_t>();
  st.data_cursor = j.at("data_cursor").get<std::string>();
  st.options = j.at("options");
  st.model_fingerprint = j.at("model_fingerprint").get<std::string>();
  st.tokens_seen = j.value("tokens_seen", 0.0);
  st.extra = j.value("extra", nlohmann::json::object());
  if (st.model_fingerprint != model_fingerprint(m))
    fail(dir, ": this checkpoint was made for another model (fingerprint ", st.model_fingerprint, ", this model is ",
         model_fingerprint(m), ")");
  Adapter loaded = Adapter::load_peft(dir, m);
  if (loaded.modules.size() != a.modules.size())
    fail(dir, ": the checkpoint adapts ", loaded.modules.size(), " modules, this run's LoRA setup adapts ", a.modules.size());
  for (size_t i = 0; i < a.modules.size(); ++i) {
    const auto& x = loaded.modules[i];
    const auto& y = a.modules[i];
    if (x.target != y.target || x.r != y.r || x.A.size() != y.A.size() || x.B.size() != y.B.size() || x.scaling != y.scaling)
      fail(dir, ": the checkpoint's LoRA module ", x.target, " (r=", x.r, ", scaling ", x.scaling,
           ") does not match this run's ", y.target, " (r=", y.r, ", scaling ", y.scaling, "): other LoRA options?");
  }
  a.modules = std::move(loaded.modules);
  TensorStore os = TensorStore::open_file(dir + "/optimizer.safetensors");
  opt.m().clear();
  opt.v().clear();
  for (size_t i = 0; i < 2 * a.modules.size(); ++i) {
    const size_t want = (i % 2 == 0) ? a.modules[i / 2].A.size() : a.modules[i / 2].B.size();
    for (const char* kind : {"m.", "v."}) {
      const TensorView& t = os.get(kind + std::to_string(i));
      if (t.dtype != DType::F32 || size_t(t.numel()) != want)
        fail(os.where(), ": optimizer tensor ", kind, i, " has ", t.numel(), " entries, expected ", want);
    }
    opt.m().push_back(os.get("m." + std::to_string(i)).to_floats());
    opt.v().push_back(os.get("v." + std::to_string(i)).to_floats());
  }
  opt.set_steps(j.at("optimizer_steps").get<int64_t>());
}

}  // namespace gt
