// vnm (V:2:M): columns U8[RB*CB*4], values[rows*CB*2], metadata U32[rows*ceil(CB/8)],
// RB = ceil(rows/V), CB = ceil(cols/M).
// Per V x M block the 4 column offsets (0..M-1) every row of the block draws from: the columns
// holding nonzeros, completed with the lowest unused offsets, ascending (offsets past `cols` only
// occur in a ragged last block narrower than 4 columns). Per row and block the 2 kept values,
// ascending, and one nibble idx0 | idx1 << 2 (idx0 < idx1) indexing the block's 4 columns;
// rows with fewer than 2 nonzeros are padded with +0 at the lowest unused indices. Nibble cb of a
// row sits at bits 4*(cb%8) of the row's word cb/8 (the 2:4 metadata layout); bits past the last
// block are 0. A ragged last row-block simply has fewer than V rows.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <bitset>

#include "format/format_internal.h"

namespace sparsa::format {
namespace {

void check_vnm_pattern(const Pattern& pattern, const std::string& who) {
  if (pattern.kind != PatternKind::VNM)
    fail("{}: vnm needs a V:N:M pattern, got pattern '{}'", who, describe(pattern));
  if (pattern.n != 2 || pattern.v < 1 || pattern.m < 4 || pattern.m > 256)
    fail("{}: vnm needs V >= 1, N = 2 and 4 <= M <= 256, got pattern '{}'", who, describe(pattern));
}

int64_t metadata_words(int64_t column_blocks) { return ceil_div(column_blocks, 8); }

}  // namespace

PackedMatrix pack_vnm(const Tensor& dense, const Pattern& pattern) {
  check_vnm_pattern(pattern, fmt::format("tensor '{}'", dense.name()));
  PackedMatrix packed = start_packed(FormatKind::VNM, dense, pattern);
  const int64_t rows = packed.rows, cols = packed.cols, v = pattern.v, m = pattern.m;
  const int64_t row_blocks = ceil_div(rows, v), col_blocks = ceil_div(cols, m);
  const int64_t words = metadata_words(col_blocks);
  const std::byte* src = dense.bytes().data();
  const size_t size = dtype_size(dense.dtype());
  const std::string name = describe(pattern);

  PackedArray columns = make_array("columns", DType::U8, row_blocks * col_blocks * 4);
  PackedArray values = make_array("values", dense.dtype(), rows * col_blocks * 2);
  PackedArray metadata = make_array("metadata", DType::U32, rows * words);
  uint8_t* kept = array_data<uint8_t>(columns);
  uint32_t* meta = array_data<uint32_t>(metadata);
  for (int64_t rb = 0; rb < row_blocks; ++rb) {
    const int64_t r0 = rb * v, r1 = std::min(rows, r0 + v);
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      const int64_t c0 = cb * m;
      const int width = static_cast<int>(std::min(m, cols - c0));
      std::bitset<256> used;  // offsets with a nonzero in any row of the block
      for (int64_t r = r0; r < r1; ++r) {
        int count = 0;
        for (int o = 0; o < width; ++o)
          if (!value_is_zero(src, size, r * cols + c0 + o)) {
            used.set(o);
            ++count;
          }
        if (count > 2)
          fail("tensor '{}': row {}, columns {}..{}: {} nonzeros where {} allows 2", dense.name(),
               r, c0, c0 + width - 1, count, name);
      }
      if (used.count() > 4)
        fail(
            "tensor '{}': rows {}..{}, columns {}..{}: {} distinct nonzero columns where {} "
            "allows 4",
            dense.name(), r0, r1 - 1, c0, c0 + width - 1, used.count(), name);
      uint8_t* block = kept + (rb * col_blocks + cb) * 4;
      int count = 0;
      for (int o = 0; o < m && count < 4; ++o)
        if (used.test(o)) block[count++] = static_cast<uint8_t>(o);
      for (int o = 0; count < 4; ++o)  // complete with the lowest unused offsets
        if (!used.test(o)) block[count++] = static_cast<uint8_t>(o);
      std::sort(block, block + 4);

      for (int64_t r = r0; r < r1; ++r) {
        unsigned nonzero = 0;  // bit k: the row's entry in the block's column k is nonzero
        for (int k = 0; k < 4; ++k)
          if (block[k] < width && !value_is_zero(src, size, r * cols + c0 + block[k]))
            nonzero |= 1u << k;
        int index[2], n = 0;
        for (int k = 0; k < 4 && n < 2; ++k)
          if (nonzero >> k & 1) index[n++] = k;
        for (int k = 0; n < 2; ++k)  // pad with the lowest unused indices
          if (!(nonzero >> k & 1)) index[n++] = k;
        std::sort(index, index + 2);
        for (int j = 0; j < 2; ++j)
          if (nonzero >> index[j] & 1)
            copy_value(values.bytes.data(), (r * col_blocks + cb) * 2 + j, src,
                       r * cols + c0 + block[index[j]], size);
        const uint32_t nibble = static_cast<uint32_t>(index[0] | index[1] << 2);
        meta[r * words + cb / 8] |= nibble << (4 * (cb % 8));
      }
    }
  }

  packed.arrays.push_back(std::move(columns));
  packed.arrays.push_back(std::move(values));
  packed.arrays.push_back(std::move(metadata));
  return packed;
}

void check_vnm(const PackedMatrix& packed, bool deep) {
  check_vnm_pattern(packed.pattern, describe(packed));
  const int64_t rows = packed.rows, cols = packed.cols, v = packed.pattern.v, m = packed.pattern.m;
  const int64_t row_blocks = ceil_div(rows, v), col_blocks = ceil_div(cols, m);
  const int64_t words = metadata_words(col_blocks);
  const auto& columns = expect_array(packed, "columns", DType::U8, row_blocks * col_blocks * 4);
  const auto& values = expect_array(packed, "values", packed.value_dtype, rows * col_blocks * 2);
  const auto& metadata = expect_array(packed, "metadata", DType::U32, rows * words);
  if (!deep) return;
  const uint8_t* kept = reinterpret_cast<const uint8_t*>(columns.bytes.data());
  const uint32_t* meta = reinterpret_cast<const uint32_t*>(metadata.bytes.data());
  const size_t size = dtype_size(packed.value_dtype);
  for (int64_t b = 0; b < row_blocks * col_blocks; ++b)
    for (int k = 0; k < 4; ++k)
      if (kept[b * 4 + k] >= m || (k > 0 && kept[b * 4 + k] <= kept[b * 4 + k - 1]))
        fail(
            "{}: columns of block {} (row block {}, column block {}) are not ascending offsets "
            "below M = {}",
            describe(packed), b, b / col_blocks, b % col_blocks, m);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      const uint32_t nibble = meta[r * words + cb / 8] >> (4 * (cb % 8)) & 0xf;
      const int idx0 = nibble & 3, idx1 = nibble >> 2;
      if (idx0 >= idx1)
        fail("{}: row {}, column block {}: metadata nibble {:#x} needs idx0 < idx1",
             describe(packed), r, cb, nibble);
      const uint8_t* block = kept + (r / v * col_blocks + cb) * 4;
      for (int j = 0; j < 2; ++j)
        if (cb * m + block[j == 0 ? idx0 : idx1] >= cols &&
            !value_is_zero(values.bytes.data(), size, (r * col_blocks + cb) * 2 + j))
          fail("{}: row {}, column block {}: a nonzero value past the last column",
               describe(packed), r, cb);
    }
    if (col_blocks % 8 != 0 && (meta[r * words + words - 1] >> (4 * (col_blocks % 8))) != 0)
      fail("{}: row {}: metadata bits past the last column block are not 0", describe(packed), r);
  }
}

Tensor unpack_vnm(const PackedMatrix& packed, const std::string& name) {
  check_packed(packed, true);
  Tensor out = start_unpacked(packed, name);
  std::byte* dst = out.mutable_bytes().data();
  const int64_t rows = packed.rows, cols = packed.cols, v = packed.pattern.v, m = packed.pattern.m;
  const int64_t col_blocks = ceil_div(cols, m), words = metadata_words(col_blocks);
  const uint8_t* kept = packed.as<uint8_t>("columns").data();
  const uint32_t* meta = packed.as<uint32_t>("metadata").data();
  const std::byte* values = packed.array("values").bytes.data();
  const size_t size = dtype_size(packed.value_dtype);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      const uint32_t nibble = meta[r * words + cb / 8] >> (4 * (cb % 8)) & 0xf;
      const uint8_t* block = kept + (r / v * col_blocks + cb) * 4;
      for (int j = 0; j < 2; ++j) {
        const int64_t col = cb * m + block[nibble >> (2 * j) & 3];
        if (col < cols)
          copy_value(dst, r * cols + col, values, (r * col_blocks + cb) * 2 + j, size);
      }
    }
  return out;
}

}  // namespace sparsa::format
