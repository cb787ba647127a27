// csr: row_ptr I64[rows+1], col_idx U16 (U32 when cols > 65536) [nnz], values[nnz].
// Entries are the nonzeros (-0 counts as zero) in row-major order, columns ascending in a row.
#include "format/format_internal.h"

namespace sparsa::format {
namespace {

template <typename Index>
void fill_columns(const std::byte* src, size_t size, int64_t rows, int64_t cols, Index* col_idx,
                  std::byte* values) {
  int64_t p = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      if (value_is_zero(src, size, i)) continue;
      col_idx[p] = static_cast<Index>(c);
      copy_value(values, p, src, i, size);
      ++p;
    }
}

template <typename Index>
void scatter(const PackedMatrix& packed, const int64_t* row_ptr, std::byte* out) {
  const Index* col_idx = packed.as<Index>("col_idx").data();
  const std::byte* values = packed.array("values").bytes.data();
  const size_t size = dtype_size(packed.value_dtype);
  for (int64_t r = 0; r < packed.rows; ++r)
    for (int64_t p = row_ptr[r]; p < row_ptr[r + 1]; ++p)
      copy_value(out, r * packed.cols + col_idx[p], values, p, size);
}

template <typename Index>
void check_columns(const PackedMatrix& packed, const int64_t* row_ptr) {
  const Index* col_idx = packed.as<Index>("col_idx").data();
  for (int64_t r = 0; r < packed.rows; ++r)
    for (int64_t p = row_ptr[r]; p < row_ptr[r + 1]; ++p) {
      if (static_cast<int64_t>(col_idx[p]) >= packed.cols)
        fail("{}: col_idx[{}] = {} in row {} is past the last column", describe(packed), p,
             static_cast<int64_t>(col_idx[p]), r);
      if (p > row_ptr[r] && col_idx[p] <= col_idx[p - 1])
        fail("{}: col_idx[{}] = {} in row {} does not ascend", describe(packed), p,
             static_cast<int64_t>(col_idx[p]), r);
    }
}

}  // namespace

DType csr_index_dtype(int64_t cols) { return cols <= 65536 ? DType::U16 : DType::U32; }

PackedMatrix pack_csr(const Tensor& dense, const Pattern& pattern) {
  PackedMatrix packed = start_packed(FormatKind::CSR, dense, pattern);
  const int64_t rows = packed.rows, cols = packed.cols;
  const std::byte* src = dense.bytes().data();
  const size_t size = dtype_size(dense.dtype());

  PackedArray row_ptr = make_array("row_ptr", DType::I64, rows + 1);
  int64_t* ptr = array_data<int64_t>(row_ptr);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t count = 0;
    for (int64_t c = 0; c < cols; ++c) count += !value_is_zero(src, size, r * cols + c);
    ptr[r + 1] = ptr[r] + count;
  }
  const int64_t nnz = ptr[rows];

  const DType index_dtype = csr_index_dtype(cols);
  PackedArray col_idx = make_array("col_idx", index_dtype, nnz);
  PackedArray values = make_array("values", dense.dtype(), nnz);
  if (index_dtype == DType::U16)
    fill_columns(src, size, rows, cols, array_data<uint16_t>(col_idx), values.bytes.data());
  else
    fill_columns(src, size, rows, cols, array_data<uint32_t>(col_idx), values.bytes.data());

  packed.arrays.push_back(std::move(row_ptr));
  packed.arrays.push_back(std::move(col_idx));
  packed.arrays.push_back(std::move(values));
  return packed;
}

void check_csr(const PackedMatrix& packed, bool deep) {
  const auto& row_ptr_array = expect_array(packed, "row_ptr", DType::I64, packed.rows + 1);
  const int64_t* row_ptr = reinterpret_cast<const int64_t*>(row_ptr_array.bytes.data());
  const int64_t nnz = row_ptr[packed.rows];
  if (row_ptr[0] != 0 || nnz < 0 || nnz > packed.rows * packed.cols)
    fail("{}: row_ptr runs from {} to {}, expected 0 to at most rows*cols", describe(packed),
         row_ptr[0], nnz);
  const DType index_dtype = csr_index_dtype(packed.cols);
  expect_array(packed, "col_idx", index_dtype, nnz);
  expect_array(packed, "values", packed.value_dtype, nnz);
  if (!deep) return;
  for (int64_t r = 0; r < packed.rows; ++r)
    if (row_ptr[r + 1] < row_ptr[r] || row_ptr[r + 1] - row_ptr[r] > packed.cols)
      fail("{}: row_ptr[{}] = {} after row_ptr[{}] = {}: a row must hold 0..cols entries",
           describe(packed), r + 1, row_ptr[r + 1], r, row_ptr[r]);
  if (index_dtype == DType::U16)
    check_columns<uint16_t>(packed, row_ptr);
  else
    check_columns<uint32_t>(packed, row_ptr);
}

Tensor unpack_csr(const PackedMatrix& packed, const std::string& name) {
  check_packed(packed, true);
  Tensor out = start_unpacked(packed, name);
  const int64_t* row_ptr = packed.as<int64_t>("row_ptr").data();
  if (packed.array("col_idx").dtype == DType::U16)
    scatter<uint16_t>(packed, row_ptr, out.mutable_bytes().data());
  else
    scatter<uint32_t>(packed, row_ptr, out.mutable_bytes().data());
  return out;
}

}  // namespace sparsa::format
