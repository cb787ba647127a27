// Shared pieces of the packed formats: the per-format pack/unpack/check functions the format
// table points at, and small helpers for reading and writing value and index arrays.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/half.h"
#include "sparsa/pattern.h"
#include "sparsa/tensor.h"

namespace sparsa::format {

// ---- the per-format functions (one file per format) ---------------------------------------------
PackedMatrix pack_dense(const Tensor& dense, const Pattern& pattern);
PackedMatrix pack_csr(const Tensor& dense, const Pattern& pattern);
PackedMatrix pack_bsr(const Tensor& dense, const Pattern& pattern);
PackedMatrix pack_bitmap(const Tensor& dense, const Pattern& pattern);
PackedMatrix pack_nm(const Tensor& dense, const Pattern& pattern);
PackedMatrix pack_vnm(const Tensor& dense, const Pattern& pattern);

Tensor unpack_dense(const PackedMatrix& packed, const std::string& name);
Tensor unpack_csr(const PackedMatrix& packed, const std::string& name);
Tensor unpack_bsr(const PackedMatrix& packed, const std::string& name);
Tensor unpack_bitmap(const PackedMatrix& packed, const std::string& name);
Tensor unpack_nm(const PackedMatrix& packed, const std::string& name);
Tensor unpack_vnm(const PackedMatrix& packed, const std::string& name);

// Structural checks of a packed matrix. The shallow check (array names, dtypes and sizes against
// rows/cols/pattern; O(1) reads) is what kernels need to stay in bounds for sizes; the deep check
// also reads every index (row pointers monotone, offsets in range and ascending) and is what a
// matrix from an untrusted file needs before any kernel touches it. Throw sparsa::Error.
void check_dense(const PackedMatrix& packed, bool deep);
void check_csr(const PackedMatrix& packed, bool deep);
void check_bsr(const PackedMatrix& packed, bool deep);
void check_bitmap(const PackedMatrix& packed, bool deep);
void check_nm(const PackedMatrix& packed, bool deep);
void check_vnm(const PackedMatrix& packed, bool deep);
// Dispatches on packed.format; also checks the shape and value dtype.
void check_packed(const PackedMatrix& packed, bool deep);

// ---- values ------------------------------------------------------------------------------------
// Reads element i of a value array as f32 (f32, f16, bf16).
struct ValueReader {
  const std::byte* data;
  DType dtype;
  float operator[](int64_t i) const {
    switch (dtype) {
      case DType::F32: {
        float v;
        std::memcpy(&v, data + 4 * i, 4);
        return v;
      }
      case DType::F16: {
        uint16_t bits;
        std::memcpy(&bits, data + 2 * i, 2);
        return f32_from_f16(bits);
      }
      default: {
        uint16_t bits;
        std::memcpy(&bits, data + 2 * i, 2);
        return f32_from_bf16(bits);
      }
    }
  }
};

// Whether element i (of `size` bytes) is +0 or -0: the sign bit aside, all bits clear.
inline bool value_is_zero(const std::byte* data, size_t size, int64_t i) {
  if (size == 4) {
    uint32_t bits;
    std::memcpy(&bits, data + 4 * i, 4);
    return (bits & 0x7fffffffu) == 0;
  }
  uint16_t bits;
  std::memcpy(&bits, data + 2 * i, 2);
  return (bits & 0x7fffu) == 0;
}

inline void copy_value(std::byte* dst, int64_t dst_index, const std::byte* src, int64_t src_index,
                       size_t size) {
  std::memcpy(dst + size * dst_index, src + size * src_index, size);
}

// ---- arrays ------------------------------------------------------------------------------------
inline PackedArray make_array(std::string name, DType dtype, size_t count) {
  PackedArray array;
  array.name = std::move(name);
  array.dtype = dtype;
  array.bytes.assign(count * dtype_size(dtype), std::byte{0});
  return array;
}

template <typename T>
T* array_data(PackedArray& array) {
  return reinterpret_cast<T*>(array.bytes.data());
}

// The packed matrix's header fields for a dense tensor; throws unless its dtype is f32/f16/bf16.
PackedMatrix start_packed(FormatKind format, const Tensor& dense, const Pattern& pattern);

// The all-zero dense [rows, cols] tensor an unpack fills in.
Tensor start_unpacked(const PackedMatrix& packed, const std::string& name);

// "packed csr matrix [4, 8]" — how error messages name a packed matrix.
std::string describe(const PackedMatrix& packed);
// A readable pattern for messages ("2:4", "64:2:8", "block:4x4", "unstructured"), independent
// of Pattern::to_string so that the formats do not depend on the pruning code.
std::string describe(const Pattern& pattern);

// Throws unless `packed` has an array `name` of `dtype` holding exactly `count` elements.
const PackedArray& expect_array(const PackedMatrix& packed, std::string_view name, DType dtype,
                                uint64_t count);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// csr: U16 column indices while they fit (cols <= 65536), else U32.
DType csr_index_dtype(int64_t cols);

// nm: bits per stored offset for groups of m columns (2, 4 or 8), and U32 words per row.
int nm_index_bits(int m);
int64_t nm_words_per_row(int64_t cols, int n, int m);

}  // namespace sparsa::format
