// bitmap: row_ptr I64[rows+1], bitmap U64[rows*ceil(cols/64)], values[nnz].
// Bit j of word w of a row marks column 64w+j as nonzero (-0 counts as zero); bits past `cols`
// are 0. values holds the nonzeros row-major, columns ascending; row_ptr[r] is row r's first.
#include <algorithm>
#include <bit>

#include "format/format_internal.h"

namespace sparsa::format {

PackedMatrix pack_bitmap(const Tensor& dense, const Pattern& pattern) {
  PackedMatrix packed = start_packed(FormatKind::Bitmap, dense, pattern);
  const int64_t rows = packed.rows, cols = packed.cols, words = ceil_div(cols, 64);
  const std::byte* src = dense.bytes().data();
  const size_t size = dtype_size(dense.dtype());

  PackedArray row_ptr = make_array("row_ptr", DType::I64, rows + 1);
  PackedArray bitmap = make_array("bitmap", DType::U64, rows * words);
  int64_t* ptr = array_data<int64_t>(row_ptr);
  uint64_t* bits = array_data<uint64_t>(bitmap);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t count = 0;
    for (int64_t c = 0; c < cols; ++c)
      if (!value_is_zero(src, size, r * cols + c)) {
        bits[r * words + c / 64] |= uint64_t{1} << (c % 64);
        ++count;
      }
    ptr[r + 1] = ptr[r] + count;
  }

  PackedArray values = make_array("values", dense.dtype(), ptr[rows]);
  int64_t p = 0;
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!value_is_zero(src, size, i)) copy_value(values.bytes.data(), p++, src, i, size);

  packed.arrays.push_back(std::move(row_ptr));
  packed.arrays.push_back(std::move(bitmap));
  packed.arrays.push_back(std::move(values));
  return packed;
}

void check_bitmap(const PackedMatrix& packed, bool deep) {
  const int64_t rows = packed.rows, cols = packed.cols, words = ceil_div(cols, 64);
  const auto& ptr_array = expect_array(packed, "row_ptr", DType::I64, rows + 1);
  const int64_t* ptr = reinterpret_cast<const int64_t*>(ptr_array.bytes.data());
  const int64_t nnz = ptr[rows];
  if (ptr[0] != 0 || nnz < 0 || nnz > rows * cols)
    fail("{}: row_ptr runs from {} to {}, expected 0 to at most rows*cols", describe(packed),
         ptr[0], nnz);
  expect_array(packed, "bitmap", DType::U64, rows * words);
  expect_array(packed, "values", packed.value_dtype, nnz);
  if (!deep) return;
  const uint64_t* bits = packed.as<uint64_t>("bitmap").data();
  for (int64_t r = 0; r < rows; ++r) {
    int64_t count = 0;
    for (int64_t w = 0; w < words; ++w) {
      const uint64_t word = bits[r * words + w];
      const int64_t valid = std::min<int64_t>(64, cols - 64 * w);
      if (valid < 64 && (word >> valid) != 0)
        fail("{}: row {} has bitmap bits set past the last column {}", describe(packed), r,
             cols - 1);
      count += std::popcount(word);
    }
    if (ptr[r + 1] - ptr[r] != count)
      fail("{}: row {} has {} bitmap bits set but row_ptr gives it {} values", describe(packed), r,
           count, ptr[r + 1] - ptr[r]);
  }
}

Tensor unpack_bitmap(const PackedMatrix& packed, const std::string& name) {
  check_packed(packed, true);
  Tensor out = start_unpacked(packed, name);
  std::byte* dst = out.mutable_bytes().data();
  const int64_t rows = packed.rows, cols = packed.cols, words = ceil_div(cols, 64);
  const int64_t* ptr = packed.as<int64_t>("row_ptr").data();
  const uint64_t* bits = packed.as<uint64_t>("bitmap").data();
  const std::byte* values = packed.array("values").bytes.data();
  const size_t size = dtype_size(packed.value_dtype);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t p = ptr[r];
    for (int64_t w = 0; w < words; ++w)
      for (uint64_t word = bits[r * words + w]; word != 0; word &= word - 1)
        copy_value(dst, r * cols + 64 * w + std::countr_zero(word), values, p++, size);
  }
  return out;
}

}  // namespace sparsa::format
