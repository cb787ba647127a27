#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "sparsa/error.h"

namespace sparsa {
namespace {

// A name unlikely to clash with another writer (other threads, other processes).
std::filesystem::path temp_name(const std::filesystem::path& target, int attempt) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  return target.parent_path() / fmt::format(".{}.tmp-{}-{:x}-{}", target.filename().string(),
                                            ::getpid(), salt ^ counter.fetch_add(1), attempt);
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
  if (target_.filename().empty()) fail("{}: not a file path", target_.string());
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temp_ = temp_name(target_, attempt);
    // 0666 & ~umask, like any file the user creates (mkstemp would give 0600).
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && (errno != EEXIST || attempt >= 16))
      fail("{}: cannot create temporary file {}: {}", target_.string(), temp_.string(),
           std::strerror(errno));
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_.c_str());
  }
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  const std::byte* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed after {} bytes: {}", target_.string(), written_, std::strerror(errno));
    }
    p += n;
    left -= static_cast<size_t>(n);
    written_ += static_cast<size_t>(n);
  }
}

void AtomicFile::write_zeros(size_t count) {
  static constexpr std::byte kZeros[4096] = {};
  while (count > 0) {
    const size_t n = std::min(count, sizeof(kZeros));
    write({kZeros, n});
    count -= n;
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) fail("{}: fsync failed: {}", target_.string(), std::strerror(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    ::unlink(temp_.c_str());
    fail("{}: close failed: {}", target_.string(), std::strerror(errno));
  }
  fd_ = -1;
  if (std::rename(temp_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    fail("{}: cannot rename {} into place: {}", target_.string(), temp_.string(),
         std::strerror(err));
  }
}

}  // namespace sparsa
