// PackedMatrix accessors and the helpers every format shares (headers, array checks, messages).
#include <fmt/format.h>

#include <utility>

#include "format/format_internal.h"

namespace sparsa {

const PackedArray& PackedMatrix::array(std::string_view name) const {
  for (const auto& a : arrays)
    if (a.name == name) return a;
  std::string names;
  for (const auto& a : arrays) names += (names.empty() ? "" : ", ") + a.name;
  fail("{}: no array '{}' (arrays: {})", format::describe(*this), name,
       names.empty() ? "none" : names);
}

PackedArray& PackedMatrix::array(std::string_view name) {
  return const_cast<PackedArray&>(std::as_const(*this).array(name));
}

size_t PackedMatrix::total_bytes() const {
  size_t total = 0;
  for (const auto& a : arrays) total += a.bytes.size();
  return total;
}

double PackedMatrix::bytes_per_weight() const {
  const double weights = static_cast<double>(rows) * static_cast<double>(cols);
  return weights > 0 ? static_cast<double>(total_bytes()) / weights : 0.0;
}

namespace format {

PackedMatrix start_packed(FormatKind format, const Tensor& dense, const Pattern& pattern) {
  if (!is_float_weight_dtype(dense.dtype()))
    fail("tensor '{}': dtype {} cannot be packed as {} (values must be F32, F16 or BF16)",
         dense.name(), dtype_name(dense.dtype()), format_name(format));
  PackedMatrix packed;
  packed.format = format;
  packed.rows = dense.rows();
  packed.cols = dense.cols();
  packed.value_dtype = dense.dtype();
  packed.pattern = pattern;
  return packed;
}

Tensor start_unpacked(const PackedMatrix& packed, const std::string& name) {
  return Tensor(name, packed.value_dtype, {packed.rows, packed.cols});
}

std::string describe(const PackedMatrix& packed) {
  return fmt::format("packed {} matrix [{}, {}]", format_name(packed.format), packed.rows,
                     packed.cols);
}

std::string describe(const Pattern& p) {
  switch (p.kind) {
    case PatternKind::Dense:
      return "dense";
    case PatternKind::Unstructured:
      return fmt::format("unstructured:{}", p.sparsity);
    case PatternKind::NM:
      return fmt::format("{}:{}", p.n, p.m);
    case PatternKind::VNM:
      return fmt::format("{}:{}:{}", p.v, p.n, p.m);
    case PatternKind::Block:
      return fmt::format("block:{}x{}:{}", p.block_rows, p.block_cols, p.sparsity);
    case PatternKind::Rows:
      return fmt::format("rows:{}", p.sparsity);
    case PatternKind::Columns:
      return fmt::format("cols:{}", p.sparsity);
  }
  return "unknown";
}

const PackedArray& expect_array(const PackedMatrix& packed, std::string_view name, DType dtype,
                                uint64_t count) {
  const PackedArray& a = packed.array(name);
  if (a.dtype != dtype)
    fail("{}: array '{}' has dtype {}, expected {}", describe(packed), name, dtype_name(a.dtype),
         dtype_name(dtype));
  if (a.bytes.size() != count * dtype_size(dtype))
    fail("{}: array '{}' holds {} bytes, expected {} ({} x {})", describe(packed), name,
         a.bytes.size(), count * dtype_size(dtype), count, dtype_name(dtype));
  return a;
}

int nm_index_bits(int m) { return m <= 4 ? 2 : m <= 16 ? 4 : 8; }

int64_t nm_words_per_row(int64_t cols, int n, int m) {
  return ceil_div(ceil_div(cols, m) * n * nm_index_bits(m), 32);
}

void check_packed(const PackedMatrix& packed, bool deep) {
  if (packed.rows < 0 || packed.cols < 0) fail("{}: negative shape", describe(packed));
  if (!is_float_weight_dtype(packed.value_dtype))
    fail("{}: value dtype {} is not F32, F16 or BF16", describe(packed),
         dtype_name(packed.value_dtype));
  switch (packed.format) {
    case FormatKind::Dense:
      return check_dense(packed, deep);
    case FormatKind::CSR:
      return check_csr(packed, deep);
    case FormatKind::BSR:
      return check_bsr(packed, deep);
    case FormatKind::Bitmap:
      return check_bitmap(packed, deep);
    case FormatKind::NM:
      return check_nm(packed, deep);
    case FormatKind::VNM:
      return check_vnm(packed, deep);
  }
  fail("packed matrix: unknown format kind {}", static_cast<int>(packed.format));
}

}  // namespace format
}  // namespace sparsa
