// Writes a file atomically: bytes go to a temporary file beside the target, which is renamed
// over the target on commit(). If commit() is never reached (an error, an exception), the
// destructor removes the temporary file, so a failed write never leaves partial output.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>

namespace sparsa {

class AtomicFile {
 public:
  // Creates the temporary file; throws sparsa::Error naming `target` when it cannot.
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const std::byte> bytes);
  void write_zeros(size_t count);
  size_t bytes_written() const { return written_; }
  // Flushes to disk and renames into place.
  void commit();

 private:
  std::filesystem::path target_, temp_;
  int fd_ = -1;
  size_t written_ = 0;
};

}  // namespace sparsa
