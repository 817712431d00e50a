#include "gemmatune/cli/args.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "gemmatune/util/error.h"

namespace gt::cli {

Args::Args(std::string command, std::string summary, int argc, char** argv)
    : command_(std::move(command)), summary_(std::move(summary)) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
    } else if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string key = a.substr(2), val;
      auto eq = key.find('=');
      if (eq != std::string::npos) {
        val = key.substr(eq + 1);
        key = key.substr(0, eq);
        values_.emplace(key, val);
      } else if (i + 1 < argc && !(std::string(argv[i + 1]).compare(0, 2, "--") == 0)) {
        // Value-taking vs flag is decided when the option is declared; keep both readings.
        values_.emplace(key, argv[i + 1]);
        flags_given_.push_back(key);
        ++i;
        positional_.push_back(std::string("\x01") + key);  // marker: may be a flag followed by a positional
        positional_.push_back(argv[i]);
      } else {
        flags_given_.push_back(key);
        values_.emplace(key, "");
      }
    } else {
      positional_.push_back(a);
    }
  }
}

const std::string* Args::raw(const std::string& name) const {
  auto r = values_.equal_range(name);
  if (r.first == r.second) return nullptr;
  auto last = r.second;
  --last;
  return &last->second;
}

std::string Args::str(const std::string& name, const std::string& def, const std::string& help) {
  declared_.push_back({name, def, help, false, false});
  // A value-taking option consumed its following word: drop the positional marker pairs (one per
  // occurrence: a repeatable option such as --stop may be given several times).
  for (size_t i = 0; i + 1 < positional_.size();)
    if (positional_[i] == "\x01" + name) positional_.erase(positional_.begin() + long(i), positional_.begin() + long(i) + 2);
    else ++i;
  const std::string* v = raw(name);
  if (!v) return def;
  return *v;
}

std::string Args::required(const std::string& name, const std::string& help) {
  std::string v = str(name, "", help);
  declared_.back().is_required = true;
  if (!given(name) || v.empty()) missing_.push_back(name);
  return v;
}

int64_t Args::integer(const std::string& name, int64_t def, const std::string& help) {
  std::string v = str(name, std::to_string(def), help);
  if (!given(name)) return def;
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) fail(command_, ": --", name, " expects an integer, got '", v, "'");
  return x;
}

double Args::real(const std::string& name, double def, const std::string& help) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", def);
  std::string v = str(name, buf, help);
  if (!given(name)) return def;
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) fail(command_, ": --", name, " expects a number, got '", v, "'");
  return x;
}

bool Args::flag(const std::string& name, const std::string& help) {
  declared_.push_back({name, "", help, true, false});
  // A flag never takes a value: give back a word it may have swallowed as a positional.
  for (size_t i = 0; i + 1 < positional_.size(); ++i)
    if (positional_[i] == "\x01" + name) {
      positional_.erase(positional_.begin() + long(i));
      break;
    }
  auto r = values_.equal_range(name);
  if (r.first == r.second) return false;
  const std::string& v = std::prev(r.second)->second;
  bool swallowed = std::find(flags_given_.begin(), flags_given_.end(), name) != flags_given_.end();
  if (v.empty() || swallowed) return true;
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  fail(command_, ": --", name, " is a flag; got value '", v, "'");
}

std::vector<std::string> Args::all(const std::string& name, const std::string& help) {
  str(name, "", help);
  std::vector<std::string> out;
  auto r = values_.equal_range(name);
  for (auto it = r.first; it != r.second; ++it) out.push_back(it->second);
  return out;
}

bool Args::finish() {
  // Remaining markers belong to undeclared options.
  std::vector<std::string> clean;
  for (const auto& p : positional_)
    if (p.empty() || p[0] != '\x01') clean.push_back(p);
  positional_ = clean;
  if (help_) {
    std::printf("usage: gemmatune %s %s[options]\n\n%s\n\noptions:\n", command_.c_str(),
                positional_usage_.empty() ? "" : (positional_usage_ + " ").c_str(), summary_.c_str());
    for (const auto& o : declared_) {
      std::string left = "  --" + o.name + (o.is_flag ? "" : " VALUE");
      std::printf("%-28s %s", left.c_str(), o.help.c_str());
      if (o.is_required) std::printf(" (required)");
      else if (!o.is_flag && !o.def.empty()) std::printf(" (default: %s)", o.def.c_str());
      std::printf("\n");
    }
    std::printf("  %-26s %s\n", "--help", "show this help");
    return true;
  }
  for (const auto& kv : values_) {
    bool known = false;
    for (const auto& o : declared_) known |= o.name == kv.first;
    if (!known) fail(command_, ": unknown option --", kv.first, " (see gemmatune ", command_, " --help)");
  }
  if (!missing_.empty()) fail(command_, ": missing required option --", missing_.front(), " (see gemmatune ", command_, " --help)");
  return false;
}

}  // namespace gt::cli
