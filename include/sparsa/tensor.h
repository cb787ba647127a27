// Tensors: a name, a dtype, a shape and bytes (owned, or a view into an mmap'd file).
// A tensor of shape [d0, ..., dk] is seen as a matrix of rows = d0*...*d(k-1) and cols = dk:
// the last dimension is the input dimension K, contiguous in memory (PyTorch's Linear layout).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sparsa {

enum class DType : uint8_t { F32, F16, BF16, F64, I8, U8, I16, U16, I32, U32, I64, U64, Bool };

size_t dtype_size(DType dtype);
// The safetensors spelling: "F32", "F16", "BF16", "I8", ...
std::string_view dtype_name(DType dtype);
std::optional<DType> dtype_from_name(std::string_view name);
// f32, f16 and bf16: the dtypes weights can be pruned, packed and multiplied in.
bool is_float_weight_dtype(DType dtype);

class Tensor {
 public:
  Tensor() = default;
  // Owned, zero-filled storage.
  Tensor(std::string name, DType dtype, std::vector<int64_t> shape);
  // A read-only view of bytes kept alive by `owner` (e.g. an mmap'd file).
  static Tensor view(std::string name, DType dtype, std::vector<int64_t> shape,
                     std::shared_ptr<const void> owner, const std::byte* data);
  // Converts float values into a new tensor of `dtype` (f32, f16 or bf16).
  static Tensor from_f32(std::string name, DType dtype, std::vector<int64_t> shape,
                         std::span<const float> values);

  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const;
  size_t nbytes() const { return numel() * dtype_size(dtype_); }
  // The matrix view: rows = product of all but the last dimension, cols = the last.
  int64_t rows() const;
  int64_t cols() const;

  std::span<const std::byte> bytes() const { return {data_, nbytes()}; }
  // Writable bytes; a read-only view is copied into owned storage first.
  std::span<std::byte> mutable_bytes();

  // Values as f32 (f32, f16 and bf16 tensors; other dtypes throw sparsa::Error).
  std::vector<float> to_f32() const;
  // Overwrites the values from f32, rounding to this tensor's dtype.
  void assign_f32(std::span<const float> values);

 private:
  std::string name_;
  DType dtype_ = DType::F32;
  std::vector<int64_t> shape_;
  std::shared_ptr<const void> owner_;
  const std::byte* data_ = nullptr;
  bool owned_ = false;
};

// Fraction of entries that are exactly zero (f32/f16/bf16 tensors), in [0, 1].
double sparsity(const Tensor& tensor);

// "[4096, 4096]"
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace sparsa
