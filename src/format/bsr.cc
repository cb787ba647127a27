// bsr: block_row_ptr I64[R+1], block_col U32[nblocks], values[nblocks*bh*bw].
// R = ceil(rows/bh). A bh x bw block is stored when any of its entries is nonzero; block_col is
// the block's column index (its first column is block_col*bw), ascending within a block row.
// Each block is row-major and keeps its zeros bit-exactly; entries past the matrix edge are +0.
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "format/format_internal.h"

namespace sparsa::format {
namespace {

struct BlockShape {
  int64_t bh, bw;
};

BlockShape block_shape(const Pattern& pattern, const std::string& who) {
  if (pattern.block_rows <= 0 || pattern.block_cols <= 0)
    fail("{}: bsr needs a block shape (a block:RxC pattern), got pattern '{}'", who,
         describe(pattern));
  return {pattern.block_rows, pattern.block_cols};
}

}  // namespace

PackedMatrix pack_bsr(const Tensor& dense, const Pattern& pattern) {
  const auto [bh, bw] = block_shape(pattern, fmt::format("tensor '{}'", dense.name()));
  PackedMatrix packed = start_packed(FormatKind::BSR, dense, pattern);
  const int64_t rows = packed.rows, cols = packed.cols;
  const int64_t block_rows = ceil_div(rows, bh), block_cols = ceil_div(cols, bw);
  const std::byte* src = dense.bytes().data();
  const size_t size = dtype_size(dense.dtype());

  PackedArray row_ptr = make_array("block_row_ptr", DType::I64, block_rows + 1);
  int64_t* ptr = array_data<int64_t>(row_ptr);
  std::vector<uint32_t> kept_cols;
  for (int64_t br = 0; br < block_rows; ++br) {
    const int64_t r_end = std::min(rows, (br + 1) * bh);
    for (int64_t bc = 0; bc < block_cols; ++bc) {
      const int64_t c_end = std::min(cols, (bc + 1) * bw);
      bool any = false;
      for (int64_t r = br * bh; r < r_end && !any; ++r)
        for (int64_t c = bc * bw; c < c_end && !any; ++c)
          any = !value_is_zero(src, size, r * cols + c);
      if (any) kept_cols.push_back(static_cast<uint32_t>(bc));
    }
    ptr[br + 1] = static_cast<int64_t>(kept_cols.size());
  }

  PackedArray block_col = make_array("block_col", DType::U32, kept_cols.size());
  if (!kept_cols.empty())
    std::memcpy(block_col.bytes.data(), kept_cols.data(), kept_cols.size() * sizeof(uint32_t));
  PackedArray values = make_array("values", dense.dtype(), kept_cols.size() * bh * bw);
  for (int64_t br = 0; br < block_rows; ++br)
    for (int64_t p = ptr[br]; p < ptr[br + 1]; ++p) {
      const int64_t bc = kept_cols[p];
      for (int64_t r = 0; r < bh && br * bh + r < rows; ++r)
        for (int64_t c = 0; c < bw && bc * bw + c < cols; ++c)
          copy_value(values.bytes.data(), (p * bh + r) * bw + c, src,
                     (br * bh + r) * cols + bc * bw + c, size);
    }

  packed.arrays.push_back(std::move(row_ptr));
  packed.arrays.push_back(std::move(block_col));
  packed.arrays.push_back(std::move(values));
  return packed;
}

void check_bsr(const PackedMatrix& packed, bool deep) {
  const auto [bh, bw] = block_shape(packed.pattern, describe(packed));
  const int64_t block_rows = ceil_div(packed.rows, bh), block_cols = ceil_div(packed.cols, bw);
  const auto& ptr_array = expect_array(packed, "block_row_ptr", DType::I64, block_rows + 1);
  const int64_t* ptr = reinterpret_cast<const int64_t*>(ptr_array.bytes.data());
  const int64_t nblocks = ptr[block_rows];
  if (ptr[0] != 0 || nblocks < 0 || nblocks > block_rows * block_cols)
    fail("{}: block_row_ptr runs from {} to {}, expected 0 to at most {} blocks", describe(packed),
         ptr[0], nblocks, block_rows * block_cols);
  expect_array(packed, "block_col", DType::U32, nblocks);
  expect_array(packed, "values", packed.value_dtype, nblocks * bh * bw);
  if (!deep) return;
  const uint32_t* block_col = packed.as<uint32_t>("block_col").data();
  for (int64_t br = 0; br < block_rows; ++br) {
    if (ptr[br + 1] < ptr[br] || ptr[br + 1] - ptr[br] > block_cols)
      fail("{}: block_row_ptr[{}] = {} after block_row_ptr[{}] = {}", describe(packed), br + 1,
           ptr[br + 1], br, ptr[br]);
    for (int64_t p = ptr[br]; p < ptr[br + 1]; ++p) {
      if (block_col[p] >= block_cols)
        fail("{}: block_col[{}] = {} is past the last block column {}", describe(packed), p,
             block_col[p], block_cols - 1);
      if (p > ptr[br] && block_col[p] <= block_col[p - 1])
        fail("{}: block_col[{}] = {} in block row {} does not ascend", describe(packed), p,
             block_col[p], br);
    }
  }
}

Tensor unpack_bsr(const PackedMatrix& packed, const std::string& name) {
  check_packed(packed, true);
  Tensor out = start_unpacked(packed, name);
  std::byte* dst = out.mutable_bytes().data();
  const int64_t bh = packed.pattern.block_rows, bw = packed.pattern.block_cols;
  const int64_t rows = packed.rows, cols = packed.cols;
  const int64_t* ptr = packed.as<int64_t>("block_row_ptr").data();
  const uint32_t* block_col = packed.as<uint32_t>("block_col").data();
  const std::byte* values = packed.array("values").bytes.data();
  const size_t size = dtype_size(packed.value_dtype);
  for (int64_t br = 0; br < ceil_div(rows, bh); ++br)
    for (int64_t p = ptr[br]; p < ptr[br + 1]; ++p) {
      const int64_t bc = block_col[p];
      for (int64_t r = 0; r < bh && br * bh + r < rows; ++r)
        for (int64_t c = 0; c < bw && bc * bw + c < cols; ++c)
          copy_value(dst, (br * bh + r) * cols + bc * bw + c, values, (p * bh + r) * bw + c, size);
    }
  return out;
}

}  // namespace sparsa::format
