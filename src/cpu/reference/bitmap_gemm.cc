// Scalar reference for bitmap: walk each row's set bits in column order, consuming its values.
#include <bit>

#include "cpu/cpu_kernels.h"
#include "format/format_internal.h"

namespace sparsa::cpu {

void bitmap_gemm_reference(const GemmArgs& args) {
  const PackedMatrix& w = *args.w;
  const int64_t words = format::ceil_div(w.cols, 64);
  const int64_t* row_ptr = w.as<int64_t>("row_ptr").data();
  const uint64_t* bitmap = w.as<uint64_t>("bitmap").data();
  const format::ValueReader values{w.array("values").bytes.data(), w.value_dtype};
  for (int64_t i = 0; i < args.m; ++i) {
    const float* x = args.x + i * args.ldx;
    for (int64_t n = 0; n < w.rows; ++n) {
      float acc = 0.0f;
      int64_t p = row_ptr[n];
      for (int64_t word = 0; word < words; ++word)
        for (uint64_t bits = bitmap[n * words + word]; bits != 0; bits &= bits - 1)
          acc += x[64 * word + std::countr_zero(bits)] * values[p++];
      args.y[i * args.ldy + n] = acc;
    }
  }
}

}  // namespace sparsa::cpu
