// The .sparsa container: packed (and later compressed) tensors in one file.
//
//   bytes 0..7    magic "SPARSA\0\0"
//   bytes 8..15   header length H, u64 little-endian
//   bytes 16..    JSON header (H bytes, compact): {"format_version": 1, "metadata": {...},
//                 "tensors": [...], "header_xxh64": "<16 hex>"}, where header_xxh64 is the XXH64
//                 of the same compact JSON without that field (details in src/io/container.cc)
//   then          zero padding, and the blobs, each starting at a multiple of 64 bytes from the
//                 file start
//
// Each tensor entry records its name, original shape and dtype, pattern, format, the codec spec
// when its values are compressed, and one blob per packed array with its offset, size, dtype and
// XXH64 checksum. The reader checks every bound and
// checksum and throws sparsa::Error naming the file, tensor and problem.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "sparsa/codec.h"
#include "sparsa/format.h"

namespace sparsa {

inline constexpr int kContainerVersion = 1;

struct ContainerTensor {
  std::string name;
  std::vector<int64_t> shape;  // the original tensor's shape (rows x cols is its matrix view)
  PackedMatrix packed;
  // Set when the values are compressed (sparsa/codec.h): `packed` then holds the codec's
  // arrays in place of "values", and the header entry carries "codec": the canonical spec.
  std::optional<CodecParams> codec = std::nullopt;
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
