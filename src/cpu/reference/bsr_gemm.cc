// Scalar reference for bsr: every stored block adds its bh x bw product into bh outputs;
// rows and columns past the matrix edge (the zero padding) are skipped.
#include <algorithm>

#include "cpu/cpu_kernels.h"
#include "format/format_internal.h"

namespace sparsa::cpu {

void bsr_gemm_reference(const GemmArgs& args) {
  const PackedMatrix& w = *args.w;
  const int64_t bh = w.pattern.block_rows, bw = w.pattern.block_cols;
  const int64_t* block_row_ptr = w.as<int64_t>("block_row_ptr").data();
  const uint32_t* block_col = w.as<uint32_t>("block_col").data();
  const format::ValueReader values{w.array("values").bytes.data(), w.value_dtype};
  for (int64_t i = 0; i < args.m; ++i) {
    const float* x = args.x + i * args.ldx;
    float* y = args.y + i * args.ldy;
    std::fill(y, y + w.rows, 0.0f);
    for (int64_t br = 0; br * bh < w.rows; ++br)
      for (int64_t p = block_row_ptr[br]; p < block_row_ptr[br + 1]; ++p)
        for (int64_t r = 0; r < bh && br * bh + r < w.rows; ++r) {
          float acc = 0.0f;
          for (int64_t c = 0; c < bw && block_col[p] * bw + c < w.cols; ++c)
            acc += x[block_col[p] * bw + c] * values[(p * bh + r) * bw + c];
          y[br * bh + r] += acc;
        }
  }
}

}  // namespace sparsa::cpu
