// File helpers: whole-file reads, read-only memory maps, and atomic writes (temp + fsync + rename).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace gt {

std::string read_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
// Creates `path` and its missing parents (mkdir -p); fails with the folder and the reason.
void make_dirs(const std::string& path);

// A read-only mapping of a whole file. Pages are touched only when read.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes `path` atomically: `fill` writes into a temporary file in the same directory, which is
// flushed, fsync'ed and renamed over `path`; the directory is fsync'ed too. On any failure the
// temporary is removed and `path` is left as it was.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& fill);
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace gt
