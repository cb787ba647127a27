// Scalar reference: Y[i, n] = sum_k X[i, k] * W[n, k] over the dense values, f32 accumulation.
#include "cpu/cpu_kernels.h"
#include "format/format_internal.h"

namespace sparsa::cpu {

void dense_gemm_reference(const GemmArgs& args) {
  const PackedMatrix& w = *args.w;
  const format::ValueReader values{w.array("values").bytes.data(), w.value_dtype};
  for (int64_t i = 0; i < args.m; ++i) {
    const float* x = args.x + i * args.ldx;
    for (int64_t n = 0; n < w.rows; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < w.cols; ++k) acc += x[k] * values[n * w.cols + k];
      args.y[i * args.ldy + n] = acc;
    }
  }
}

}  // namespace sparsa::cpu
