// The .sparsa container: packed (and later compressed) tensors in one file.
//
//   bytes 0..7    magic "SPARSA\0\0"
//   bytes 8..15   header length H, u64 little-endian
//   bytes 16..    JSON header (H bytes): {"format_version": 1, "tensors": [...],
//                 "metadata": {...}, "header_checksum"...}; see docs/formats.md
//   then          blobs, each starting at a multiple of 64 bytes from the file start
//
// Each tensor entry records its name, original shape and dtype, pattern, format, and one blob per
// packed array with its offset, size, dtype and XXH64 checksum. The reader checks every bound and
// checksum and throws sparsa::Error naming the file, tensor and problem.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "sparsa/format.h"

namespace sparsa {

inline constexpr int kContainerVersion = 1;

struct ContainerTensor {
  std::string name;
  std::vector<int64_t> shape;  // the original tensor's shape (rows x cols is its matrix view)
  PackedMatrix packed;
};

struct Container {
  std::vector<ContainerTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Atomic like write_safetensors: temporary file, then rename.
void write_container(const std::filesystem::path& path, const Container& container);
Container read_container(const std::filesystem::path& path);

// True when the file starts with the container's magic bytes.
bool is_container_file(const std::filesystem::path& path);

}  // namespace sparsa
