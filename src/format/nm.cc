// nm: values[rows*G*N], indices U32[rows*words_per_row], G = ceil(cols/M).
// Per row and group of M columns, the N kept values in ascending column order and each one's
// offset in the group (b = 2 bits for M <= 4, 4 for M <= 16, 8 for M <= 32), packed LSB first
// into the row's words: value i of the row (i = g*N + j) sits at bits [i*b, i*b + b). Groups
// with fewer than N nonzeros are padded with +0 values at the lowest unused offsets, so offsets
// are always distinct and ascending (mma.sp needs idx0 < idx1); bits past the row's last value
// are 0. For 2:4 this is the sparse tensor cores' metadata: one U32 per 32 columns, nibble
// g = idx0 | idx1 << 2.
#include <fmt/format.h>

#include <algorithm>

#include "format/format_internal.h"

namespace sparsa::format {
namespace {

void check_nm_pattern(const Pattern& pattern, const std::string& who) {
  if (pattern.kind != PatternKind::NM)
    fail("{}: nm needs an N:M pattern, got pattern '{}'", who, describe(pattern));
  if (pattern.n < 1 || pattern.n >= pattern.m || pattern.m > 32)
    fail("{}: nm needs 1 <= N < M <= 32, got pattern '{}'", who, describe(pattern));
}

}  // namespace

PackedMatrix pack_nm(const Tensor& dense, const Pattern& pattern) {
  check_nm_pattern(pattern, fmt::format("tensor '{}'", dense.name()));
  PackedMatrix packed = start_packed(FormatKind::NM, dense, pattern);
  const int64_t rows = packed.rows, cols = packed.cols;
  const int n = pattern.n, m = pattern.m, b = nm_index_bits(m);
  const int64_t groups = ceil_div(cols, m), words = nm_words_per_row(cols, n, m);
  const std::byte* src = dense.bytes().data();
  const size_t size = dtype_size(dense.dtype());

  PackedArray values = make_array("values", dense.dtype(), rows * groups * n);
  PackedArray indices = make_array("indices", DType::U32, rows * words);
  uint32_t* idx = array_data<uint32_t>(indices);
  int offsets[32];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * m;
      const int width = static_cast<int>(std::min<int64_t>(m, cols - c0));
      uint64_t nonzero = 0;  // bit o: column c0 + o is nonzero
      int count = 0;
      for (int o = 0; o < width; ++o)
        if (!value_is_zero(src, size, r * cols + c0 + o)) {
          nonzero |= uint64_t{1} << o;
          offsets[count++] = o;
        }
      if (count > n)
        fail("tensor '{}': row {}, columns {}..{}: {} nonzeros where {}:{} allows {}", dense.name(),
             r, c0, c0 + width - 1, count, n, m, n);
      for (int o = 0; count < n; ++o)  // pad with the lowest unused offsets
        if (!(nonzero >> o & 1)) offsets[count++] = o;
      std::sort(offsets, offsets + n);
      for (int j = 0; j < n; ++j) {
        const int64_t i = g * n + j;  // the value's index within its row
        if (nonzero >> offsets[j] & 1)
          copy_value(values.bytes.data(), r * groups * n + i, src, r * cols + c0 + offsets[j],
                     size);
        idx[r * words + i * b / 32] |= static_cast<uint32_t>(offsets[j]) << (i * b % 32);
      }
    }

  packed.arrays.push_back(std::move(values));
  packed.arrays.push_back(std::move(indices));
  return packed;
}

void check_nm(const PackedMatrix& packed, bool deep) {
  check_nm_pattern(packed.pattern, describe(packed));
  const int64_t rows = packed.rows, cols = packed.cols;
  const int n = packed.pattern.n, m = packed.pattern.m, b = nm_index_bits(m);
  const int64_t groups = ceil_div(cols, m), words = nm_words_per_row(cols, n, m);
  const auto& values = expect_array(packed, "values", packed.value_dtype, rows * groups * n);
  const auto& indices = expect_array(packed, "indices", DType::U32, rows * words);
  if (!deep) return;
  const uint32_t* idx = reinterpret_cast<const uint32_t*>(indices.bytes.data());
  const size_t size = dtype_size(packed.value_dtype);
  const uint32_t mask = (1u << b) - 1;
  const int64_t used_bits = groups * n * b;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      int previous = -1;
      for (int j = 0; j < n; ++j) {
        const int64_t i = g * n + j;
        const int offset = static_cast<int>(idx[r * words + i * b / 32] >> (i * b % 32) & mask);
        if (offset >= m || offset <= previous)
          fail("{}: row {}, group {}: offset {} of value {} is not ascending and below M = {}",
               describe(packed), r, g, offset, j, m);
        if (g * m + offset >= cols && !value_is_zero(values.bytes.data(), size, r * groups * n + i))
          fail("{}: row {}, group {}: a nonzero value at offset {}, past the last column",
               describe(packed), r, g, offset);
        previous = offset;
      }
    }
    if (used_bits % 32 != 0 && (idx[r * words + words - 1] >> (used_bits % 32)) != 0)
      fail("{}: row {}: index bits past the last group are not 0", describe(packed), r);
  }
}

Tensor unpack_nm(const PackedMatrix& packed, const std::string& name) {
  check_packed(packed, true);
  Tensor out = start_unpacked(packed, name);
  std::byte* dst = out.mutable_bytes().data();
  const int64_t rows = packed.rows, cols = packed.cols;
  const int n = packed.pattern.n, m = packed.pattern.m, b = nm_index_bits(m);
  const int64_t groups = ceil_div(cols, m), words = nm_words_per_row(cols, n, m);
  const uint32_t* idx = packed.as<uint32_t>("indices").data();
  const std::byte* values = packed.array("values").bytes.data();
  const size_t size = dtype_size(packed.value_dtype);
  const uint32_t mask = (1u << b) - 1;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < groups * n; ++i) {
      const int64_t col = i / n * m + (idx[r * words + i * b / 32] >> (i * b % 32) & mask);
      if (col < cols) copy_value(dst, r * cols + col, values, r * groups * n + i, size);
    }
  return out;
}

}  // namespace sparsa::format
