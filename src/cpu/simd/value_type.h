// The C++ type of a packed matrix's value dtype, for the SIMD kernels' per-dtype templates.
#pragma once

#include "hwy/base.h"
#include "sparsa/tensor.h"

namespace sparsa::cpu {

// Calls f(WT{}) with WT = hwy::float16_t, hwy::bfloat16_t or float for F16, BF16 and every other
// dtype (the kernels' checks have already refused value dtypes other than F32/F16/BF16).
template <class F>
HWY_INLINE void with_value_type(DType dtype, F&& f) {
  switch (dtype) {
    case DType::F16:
      return f(hwy::float16_t{});
    case DType::BF16:
      return f(hwy::bfloat16_t{});
    default:
      return f(float{});
  }
}

}  // namespace sparsa::cpu
