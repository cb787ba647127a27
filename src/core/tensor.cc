#include "sparsa/tensor.h"

#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sparsa/error.h"
#include "sparsa/half.h"

namespace sparsa {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4},  {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2},
    {DType::F64, "F64", 8},  {DType::I8, "I8", 1},     {DType::U8, "U8", 1},
    {DType::I16, "I16", 2},  {DType::U16, "U16", 2},   {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},  {DType::I64, "I64", 8},   {DType::U64, "U64", 8},
    {DType::Bool, "BOOL", 1},
};

const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kDTypes)
    if (entry.dtype == dtype) return entry;
  throw Error("internal: unknown dtype");
}

}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }
std::string_view dtype_name(DType dtype) { return info(dtype).name; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& entry : kDTypes)
    if (entry.name == name) return entry.dtype;
  return std::nullopt;
}

bool is_float_weight_dtype(DType dtype) {
  return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

double sparsity(const Tensor& tensor) {
  if (tensor.numel() == 0) return 0.0;
  const auto values = tensor.to_f32();
  int64_t zeros = 0;
  for (float v : values) zeros += (v == 0.0f);
  return static_cast<double>(zeros) / static_cast<double>(values.size());
}

Tensor::Tensor(std::string name, DType dtype, std::vector<int64_t> shape)
    : name_(std::move(name)), dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_)
    if (d < 0) fail("tensor '{}': negative dimension in shape {}", name_, shape_string(shape_));
  auto storage = std::shared_ptr<std::byte[]>(new std::byte[std::max<size_t>(nbytes(), 1)]());
  data_ = storage.get();
  owner_ = std::move(storage);
  owned_ = true;
}

Tensor Tensor::view(std::string name, DType dtype, std::vector<int64_t> shape,
                    std::shared_ptr<const void> owner, const std::byte* data) {
  Tensor tensor;
  tensor.name_ = std::move(name);
  tensor.dtype_ = dtype;
  tensor.shape_ = std::move(shape);
  tensor.owner_ = std::move(owner);
  tensor.data_ = data;
  tensor.owned_ = false;
  return tensor;
}

Tensor Tensor::from_f32(std::string name, DType dtype, std::vector<int64_t> shape,
                        std::span<const float> values) {
  Tensor tensor(std::move(name), dtype, std::move(shape));
  tensor.assign_f32(values);
  return tensor;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

int64_t Tensor::rows() const {
  if (shape_.empty()) return 1;
  int64_t n = 1;
  for (size_t i = 0; i + 1 < shape_.size(); ++i) n *= shape_[i];
  return n;
}

int64_t Tensor::cols() const { return shape_.empty() ? 1 : shape_.back(); }

std::span<std::byte> Tensor::mutable_bytes() {
  if (!owned_) {
    auto storage = std::shared_ptr<std::byte[]>(new std::byte[std::max<size_t>(nbytes(), 1)]);
    if (nbytes()) std::memcpy(storage.get(), data_, nbytes());
    data_ = storage.get();
    owner_ = std::move(storage);
    owned_ = true;
  }
  return {const_cast<std::byte*>(data_), nbytes()};
}

std::vector<float> Tensor::to_f32() const {
  const int64_t n = numel();
  std::vector<float> out(n);
  switch (dtype_) {
    case DType::F32:
      if (n) std::memcpy(out.data(), data_, n * sizeof(float));
      break;
    case DType::F16:
    case DType::BF16: {
      const bool is_f16 = dtype_ == DType::F16;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, data_ + 2 * i, 2);
        out[i] = is_f16 ? f32_from_f16(bits) : f32_from_bf16(bits);
      }
      break;
    }
    default:
      fail("tensor '{}': dtype {} is not a float weight type (F32, F16, BF16)", name_,
           dtype_name(dtype_));
  }
  return out;
}

void Tensor::assign_f32(std::span<const float> values) {
  if (static_cast<int64_t>(values.size()) != numel())
    fail("tensor '{}': {} values given for shape {}", name_, values.size(), shape_string(shape_));
  std::byte* out = mutable_bytes().data();
  switch (dtype_) {
    case DType::F32:
      if (!values.empty()) std::memcpy(out, values.data(), values.size() * sizeof(float));
      break;
    case DType::F16:
    case DType::BF16: {
      const bool is_f16 = dtype_ == DType::F16;
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t bits = is_f16 ? f16_from_f32(values[i]) : bf16_from_f32(values[i]);
        std::memcpy(out + 2 * i, &bits, 2);
      }
      break;
    }
    default:
      fail("tensor '{}': cannot store floats in dtype {}", name_, dtype_name(dtype_));
  }
}

}  // namespace sparsa
