// GGUF (llama.cpp's model file), versions 2 and 3: read-only, memory-mapped.
//
//   "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x   (string key, u32 value type, value)        strings: u64 length + bytes
//   tensor_count x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
//   padding to `general.alignment` (default 32), then the data; offsets are relative to it.
//
// Dimensions: ne[0] is the contiguous one. A 2-D weight with ne = [K, N] is our matrix
// W[rows = N, cols = K] (PyTorch's Linear layout), so shape() is ne reversed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "sparsa/tensor.h"

namespace sparsa {

// ggml's tensor types (the numbering is part of the file format).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

struct GgmlTypeTraits {
  GgmlType type;
  std::string_view name;  // "Q4_1"
  int64_t block_size;     // elements per block (1 for plain types)
  int64_t type_size;      // bytes per block
  // Block-wise decode of `count` elements (a multiple of block_size); nullptr where sparsa
  // cannot dequantise the type (it can still read files holding it).
  void (*to_f32)(const std::byte* src, float* dst, int64_t count);
};

// nullptr for a type number sparsa does not know.
const GgmlTypeTraits* ggml_type_traits(uint32_t type);
// Dequantises `count` elements of `type` from `data` (exactly the bytes they occupy).
// Throws sparsa::Error when the type cannot be decoded or the sizes do not match.
std::vector<float> dequantize(GgmlType type, std::span<const std::byte> data, int64_t count);

enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType type);

// One metadata value: integers of every width are held as int64_t (u64 above INT64_MAX as
// uint64_t), floats as double.
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  GgufValueType element_type = GgufValueType::U8;  // arrays only
  std::variant<int64_t, uint64_t, double, bool, std::string, std::vector<GgufValue>> value;

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::F32 || type == GgufValueType::F64; }
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // as stored: ne[0] contiguous
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;
  const std::byte* data = nullptr;  // inside the mapping

  std::vector<int64_t> shape() const;  // ne reversed: [..., rows, cols]
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps and validates the whole header: magic, version, every length and count against the
  // file size, value and tensor types, alignment, tensor data inside the file and aligned.
  // Any problem throws sparsa::Error naming the file, the byte offset or key/tensor, and the
  // problem.
  static GgufFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;
  // Typed look-ups; throw sparsa::Error naming the file and key when the key is missing or of
  // another type.
  const GgufValue& at(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  int64_t get_int(std::string_view key, int64_t fallback) const;
  double get_float(std::string_view key) const;  // float or integer values
  double get_float(std::string_view key, double fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<double> get_float_array(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  const GgufTensorInfo& tensor(std::string_view name) const;  // throws naming file and tensor
  // The tensor's values as an owned F32 Tensor of shape() (dequantised where quantised).
  Tensor to_f32(const GgufTensorInfo& info) const;
  Tensor to_f32(std::string_view name) const { return to_f32(tensor(name)); }

 private:
  std::filesystem::path path_;
  std::shared_ptr<const void> mapping_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

// True when the file starts with the GGUF magic.
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace sparsa
