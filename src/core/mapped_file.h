// A read-only memory mapping of a whole file. Tensor views into it hold a shared_ptr to the
// MappedFile, so the mapping lives exactly as long as the last view.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>

namespace sparsa {

class MappedFile {
 public:
  // Maps `path` read-only; throws sparsa::Error naming the file when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  MappedFile() = default;
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;  // nullptr for an empty file (mmap refuses length 0)
  size_t size_ = 0;
};

}  // namespace sparsa
