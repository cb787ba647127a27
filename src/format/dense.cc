// dense: values[rows*cols] row-major, the tensor's bytes as they are (signed zeros included).
#include "format/format_internal.h"

namespace sparsa::format {

PackedMatrix pack_dense(const Tensor& dense, const Pattern& pattern) {
  PackedMatrix packed = start_packed(FormatKind::Dense, dense, pattern);
  PackedArray values = make_array("values", dense.dtype(), dense.rows() * dense.cols());
  const auto bytes = dense.bytes();
  if (!bytes.empty()) std::memcpy(values.bytes.data(), bytes.data(), bytes.size());
  packed.arrays.push_back(std::move(values));
  return packed;
}

void check_dense(const PackedMatrix& packed, bool /*deep*/) {
  expect_array(packed, "values", packed.value_dtype, packed.rows * packed.cols);
}

Tensor unpack_dense(const PackedMatrix& packed, const std::string& name) {
  check_packed(packed, true);
  Tensor out = start_unpacked(packed, name);
  const auto& values = packed.array("values").bytes;
  if (!values.empty()) std::memcpy(out.mutable_bytes().data(), values.data(), values.size());
  return out;
}

}  // namespace sparsa::format
