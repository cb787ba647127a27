// Size checks the SIMD kernels run before touching a packed matrix's arrays, so a truncated or
// mislabelled matrix (e.g. read from a damaged file) is an Error, not an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/kernels.h"

namespace sparsa::cpu {

// The array `name` of `w` exists, has one of the given dtypes and holds at least `count` items.
inline const PackedArray& check_array(const PackedMatrix& w, std::string_view name,
                                      std::initializer_list<DType> dtypes, uint64_t count) {
  const PackedArray& array = w.array(name);
  bool dtype_ok = false;
  for (DType dtype : dtypes) dtype_ok = dtype_ok || array.dtype == dtype;
  if (!dtype_ok) {
    fail("{} matrix [{}, {}]: array '{}' has dtype {}, which the kernel does not accept",
         format_name(w.format), w.rows, w.cols, name, dtype_name(array.dtype));
  }
  const uint64_t have = array.bytes.size() / dtype_size(array.dtype);
  if (have < count) {
    fail("{} matrix [{}, {}]: array '{}' holds {} items, the shape needs {}", format_name(w.format),
         w.rows, w.cols, name, have, count);
  }
  return array;
}

// An I64 offsets array of count + 1 entries that starts at 0 and never decreases; returns the
// last entry (the number of stored values).
inline uint64_t check_offsets(const PackedMatrix& w, std::string_view name, int64_t count) {
  check_array(w, name, {DType::I64}, static_cast<uint64_t>(count) + 1);
  const auto offsets = w.as<int64_t>(name);
  if (offsets[0] != 0) {
    fail("{} matrix [{}, {}]: '{}' starts at {}, not 0", format_name(w.format), w.rows, w.cols,
         name, offsets[0]);
  }
  for (int64_t i = 0; i < count; ++i) {
    if (offsets[i + 1] < offsets[i]) {
      fail("{} matrix [{}, {}]: '{}' decreases at entry {} ({} -> {})", format_name(w.format),
           w.rows, w.cols, name, i + 1, offsets[i], offsets[i + 1]);
    }
  }
  return static_cast<uint64_t>(offsets[count]);
}

// The common part: shapes, strides and the value dtype.
inline void check_gemm_args(const GemmArgs& a) {
  const PackedMatrix& w = *a.w;
  if (w.rows < 0 || w.cols < 0 || a.m < 0) {
    fail("{} matrix [{}, {}]: negative shape (m = {})", format_name(w.format), w.rows, w.cols, a.m);
  }
  // Column indices travel in i32 lanes.
  if (w.cols > (int64_t{1} << 30)) {
    fail("{} matrix [{}, {}]: K above 2^30 is not supported by the SIMD kernels",
         format_name(w.format), w.rows, w.cols);
  }
  if (!is_float_weight_dtype(w.value_dtype)) {
    fail("{} matrix [{}, {}]: values of dtype {} cannot be multiplied (f32, f16 or bf16)",
         format_name(w.format), w.rows, w.cols, dtype_name(w.value_dtype));
  }
  if (a.m > 0 && (a.ldx < w.cols || a.ldy < w.rows)) {
    fail("{} matrix [{}, {}]: leading dimensions ldx = {}, ldy = {} are smaller than K, N",
         format_name(w.format), w.rows, w.cols, a.ldx, a.ldy);
  }
}

}  // namespace sparsa::cpu
