// Helpers for the fuzz targets whose readers take paths (safetensors files are memory-mapped, model
// and adapter folders are read by name): a private scratch folder per fuzzing process, an input
// split into several files at a separator, and files written byte for byte.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace gt_fuzz {

// Separates the files packed into one fuzz input (also in the targets' dictionaries).
inline constexpr std::string_view kFileSeparator = "\n#####\n";

inline std::vector<std::string_view> split_files(const uint8_t* data, size_t size, size_t max_parts) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    size_t at = in.find(kFileSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(in.substr(0, at));
    in.remove_prefix(at + kFileSeparator.size());
  }
  parts.push_back(in);
  return parts;
}

// A folder under $TMPDIR (or /tmp) private to this process, removed at exit.
inline const std::string& scratch_root() {
  static const std::string root = [] {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/gemmatune-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string keep;
    keep = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return tmpl;
  }();
  return root;
}

// An empty folder `name` under the scratch root (emptied if it exists).
inline std::string fresh_dir(const std::string& name) {
  const std::string d = scratch_root() + "/" + name;
  std::error_code ec;
  std::filesystem::remove_all(d, ec);
  std::filesystem::create_directories(d);
  return d;
}

inline void write_bytes(const std::string& path, std::string_view bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size())) {
    std::perror(path.c_str());
    std::abort();
  }
  std::fclose(f);
}

}  // namespace gt_fuzz
