// Matrix products on packed weights: Y[M, N] = X[M, K] * W[N, K]^T, f32 activations, weights in
// f32/f16/bf16, f32 accumulation. The same call for every packed format.
#pragma once

#include <cstdint>
#include <span>

#include "sparsa/format.h"

namespace sparsa {

struct GemmArgs {
  const float* x = nullptr;  // [m, ldx], row-major; the first K = w->cols columns are used
  int64_t m = 0;
  int64_t ldx = 0;
  const PackedMatrix* w = nullptr;
  float* y = nullptr;  // [m, ldy], row-major; the first N = w->rows columns are written
  int64_t ldy = 0;
};

enum class Backend {
  Reference,  // scalar, obviously right, single-threaded
  Simd,       // Highway SIMD, all cores (OpenMP)
};

// Y = X * W^T. x holds m*K floats, y receives m*N floats (both dense, row-major).
// Throws sparsa::Error when the spans are too small for the shapes.
void gemm(std::span<const float> x, int64_t m, const PackedMatrix& w, std::span<float> y,
          Backend backend = Backend::Simd);

}  // namespace sparsa
